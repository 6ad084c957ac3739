"""Run freqtrade's command line without an exchange: the markets come from a static list (as
freqtrade's own tests patch them) and nothing else is fetched. Not a test module: the freqtrade
tests start it as ``python tests/freqtrade_offline.py SUBCOMMAND ...`` with ``FT_STATIC_PAIRS``
naming the pairs (``ETH/USDT,BTC/USDT``)."""

from __future__ import annotations

import os
import sys


def static_markets(pairs: list[str]) -> dict:
    """ccxt market entries for spot pairs (Binance's tick-size precision, 0.1 % fees)."""
    markets = {}
    for pair in pairs:
        base, quote = pair.split(":")[0].split("/")
        markets[pair] = {
            "id": f"{base}{quote}",
            "symbol": pair,
            "base": base,
            "quote": quote,
            "baseId": base,
            "quoteId": quote,
            "settle": None,
            "settleId": None,
            "active": True,
            "type": "spot",
            "spot": True,
            "margin": False,
            "swap": False,
            "future": False,
            "option": False,
            "contract": False,
            "linear": None,
            "inverse": None,
            "contractSize": None,
            "taker": 0.001,
            "maker": 0.001,
            "precision": {"amount": 0.0001, "price": 0.01},
            "limits": {
                "amount": {"min": 0.0001, "max": 900000.0},
                "price": {"min": 0.01, "max": 1000000.0},
                "cost": {"min": 5.0, "max": None},
                "leverage": {"min": None, "max": None},
            },
            "info": {},
        }
    return markets


def patch_exchange(pairs: list[str]) -> None:
    """Markets from `static_markets`; no time-offset check, no trading-fee fetch."""
    from freqtrade.exchange.exchange import Exchange
    from freqtrade.util import dt_ts

    markets = static_markets(pairs)

    def reload_markets(self, force: bool = False, *, load_leverage_tiers: bool = True) -> None:
        self._markets = markets
        for api in (self._api, self._api_async):
            api.set_markets(markets)
        self._last_markets_refresh = dt_ts()

    Exchange.reload_markets = reload_markets
    Exchange.check_time_offset = lambda self: None
    Exchange.fetch_trading_fees = lambda self: {}


if __name__ == "__main__":
    patch_exchange([p for p in os.environ["FT_STATIC_PAIRS"].split(",") if p])
    from freqtrade.main import main

    main(sys.argv[1:])
