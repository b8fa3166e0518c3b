# shellcheck shell=bash
# Shared helpers for the node VM harness (sourced by build-image, install-deps and run).
#
# Nothing here has side effects when sourced; every function prints or returns only.

# Where built images live. Overridable so CI or a developer can point it elsewhere.
SKIFF_VM_CACHE=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The host's codename (bookworm on the dev and CI machines).
host_codename() {
    . /etc/os-release
    printf '%s\n' "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"
}

# Print every enabled apt source of the host as "URI SUITE" lines, from both the
# one-line format (*.list) and the deb822 format (*.sources).
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [opts] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Stanzas separated by blank lines; emit URI x suite for deb stanzas
        # that are not disabled with "Enabled: no".
        awk '
            function flush(   i, j) {
                if (types ~ /(^| )deb( |$)/ && enabled != "no")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                types = ""; enabled = ""; nu = 0; ns = 0
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                if (key == "types") { $1 = ""; types = $0 }
                else if (key == "enabled") enabled = tolower($2)
                else if (key == "uris") { for (i = 2; i <= NF; i++) u[++nu] = $i }
                else if (key == "suites") { for (i = 2; i <= NF; i++) s[++ns] = $i }
            }
            END { flush() }
        ' "$f"
    done
}

# The Debian mirror the host's apt uses for its own release, e.g.
# http://deb.debian.org/debian. SKIFF_VM_MIRROR overrides it.
debian_mirror() {
    if [ -n "${SKIFF_VM_MIRROR:-}" ]; then
        printf '%s\n' "${SKIFF_VM_MIRROR%/}"
        return
    fi
    local codename uri
    codename=$(host_codename)
    uri=$(apt_sources | awk -v c="$codename" '$2 == c { print $1; exit }')
    [ -n "$uri" ] || die "no apt source for suite '$codename' in /etc/apt/sources.list*"
    printf '%s\n' "${uri%/}"
}
