# Sourced by docker/make-base.sh, docker/build.sh and docker/smoke.sh: checks what a script needs
# before it starts any work, and stops with one line naming everything that is missing and the
# command that installs it.
#
#   need SCRIPT WHAT HOW [WHAT HOW ...]   # WHAT: a command name, or a test such as "root"
#
# A WHAT is present when `command -v WHAT` finds it; the special WHATs are "root" (the script runs
# as root), "image:NAME" (a local image NAME, with buildah or Docker, whichever $BUILDER names) and
# "file:PATH" (an executable file).

need() {
    local script=$1 missing=() fixes=()
    shift
    while [ $# -gt 1 ]; do
        local what=$1 how=$2 ok=1
        shift 2
        case "$what" in
            root) [ "$(id -u)" = 0 ] || ok=0 ;;
            image:*)
                if [ "${BUILDER:-buildah}" = docker ]; then
                    docker image inspect "${what#image:}" >/dev/null 2>&1 || ok=0
                else
                    buildah inspect --type image "${what#image:}" >/dev/null 2>&1 || ok=0
                fi ;;
            file:*) [ -x "${what#file:}" ] || ok=0 ;;
            *) command -v "$what" >/dev/null 2>&1 || ok=0 ;;
        esac
        if [ "$ok" = 0 ]; then
            what=${what#image:}
            missing+=("${what#file:}")
            fixes+=("$how")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local line="$script: missing ${missing[0]}" fix="${fixes[0]}" i
        for (( i = 1; i < ${#missing[@]}; i++ )); do
            line+=", ${missing[$i]}"
            fix+="; ${fixes[$i]}"
        done
        echo "$line. First: $fix" >&2
        exit 2
    fi
}
