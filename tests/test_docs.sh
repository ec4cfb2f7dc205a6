#!/bin/bash
# The documentation against the program. Fails, naming each problem, when:
#   - an option `changegate --help` prints is not documented under OPTIONS in
#     the man page (doc/changegate.8), not in README.md's options table, or
#     (when a config file may set it) has no setting line in the example
#     config file (examples/changegate.conf);
#   - the man page, README's options table or the example config file (its
#     settings, or a --option in its comments) names an option --help does
#     not know (stale documentation);
#   - the man page's ENDPOINTS section has no entry ("GET /events") for
#     /events, /poll, /healthz, /metrics or another endpoint --help lists;
#   - groff (or man, or lexgrog) has anything to say about the man page;
#   - the example config file fails --check-config, or one of its
#     commented-out settings, once uncommented, has a bad name or value.
#
# The example config file's layout: an option's comment paragraph, a line
# holding only "#", then its setting lines, active ("name value") or
# commented out ("# name value"), then a blank line. Comment blocks without a
# lone "#" line are prose.
#
#   CHANGEGATE=src/changegate CG_SRCDIR=. bash tests/test_docs.sh
set -u

changegate="${CHANGEGATE:-src/changegate}"
srcdir="${CG_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}"
man_page="$srcdir/doc/changegate.8"
readme="$srcdir/README.md"
conf="$srcdir/examples/changegate.conf"

# Long options the man page names that are not changegate's: the placeholder
# of "--opt VALUE" (as --help writes it) and curl's, in EXAMPLES.
not_ours="opt data-urlencode"

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/state"

for f in "$man_page" "$readme" "$conf"; do
  if [ ! -r "$f" ]; then
    echo "test_docs: cannot read $f (set CG_SRCDIR to the source tree)" >&2
    exit 1
  fi
done

# ---- what --help says ----

if ! help="$("$changegate" --help)"; then
  echo "test_docs: $changegate --help failed (set CHANGEGATE to the built daemon)" >&2
  exit 1
fi
# Option lines start with two spaces and --name (or "-h, --help"); their
# continuation lines are indented further.
mapfile -t options < <(sed -n '/^Options:/,/^$/p' <<<"$help" |
  sed -nE 's/^  (-h, )?--([a-z][a-z0-9-]*).*/\2/p')
if [ "${#options[@]}" -lt 10 ]; then
  echo "test_docs: found only ${#options[@]} options in --help; has its layout changed?" >&2
  exit 1
fi
declare -A is_option=()
for o in "${options[@]}"; do is_option[$o]=1; done

# "Config file: every option but config, check-config, version and help can be set ..."
cli_only_text="$(tr '\n' ' ' <<<"$help" |
  sed -nE 's/.*Config file: every option but (.*) can be set as a.*/\1/p')"
if [ -z "$cli_only_text" ]; then
  echo "test_docs: --help no longer says which options a config file cannot set" >&2
  exit 1
fi
declare -A cli_only=()
read -ra cli_only_names <<<"$(sed 's/,/ /g; s/ and / /g' <<<"$cli_only_text")"
for o in "${cli_only_names[@]}"; do
  [ -n "${is_option[$o]:-}" ] || fail "--help: '$o', named as command-line only, is not an option"
  cli_only[$o]=1
done

mapfile -t endpoints < <({
  printf '%s\n' /events /poll /healthz /metrics
  sed -nE 's/^  GET (\/[a-z]+).*/\1/p' <<<"$help"
} | sort -u)

declare -A allowed_foreign=()
for o in $not_ours; do allowed_foreign[$o]=1; done

# The long options (without dashes) named in the text on stdin, once each.
long_options() {
  grep -oE -- '(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*' | sed -E 's/^[^-]?--//' | sort -u
}

# Whether --NAME appears as a whole option in the text on stdin.
names_option() {
  grep -qE -- "(^|[^A-Za-z0-9-])--$1([^a-z0-9-]|\$)"
}

# Fails for each option of --help that the text on stdin does not name; the
# message is the printf format $1 with the option's name.
names_every_option() { # message-format
  local text o
  text="$(cat)"
  for o in "${options[@]}"; do
    # shellcheck disable=SC2059 # the format is the caller's
    names_option "$o" <<<"$text" || fail "$(printf "$1" "$o")"
  done
}

# Fails for each --NAME in the text on stdin that --help does not know (stale
# documentation): "DOC: WHAT --NAME, ...". With "foreign", other programs'
# options ($not_ours, like curl's) are accepted too.
names_no_stale_option() { # doc what [foreign]
  local o
  while read -r o; do
    [ -n "$o" ] || continue
    [ -n "${is_option[$o]:-}" ] || { [ "${3:-}" = foreign ] && [ -n "${allowed_foreign[$o]:-}" ]; } ||
      fail "$1: $2 --$o, which is not an option of changegate --help"
  done < <(long_options)
}

# ---- the man page ----

# The man page as text: comments dropped, \- as -, font and zero-width escapes removed.
man_text="$(sed -e '/^\.\\"/d' -e 's/\\-/-/g' -e 's/\\f\[[^]]*\]//g' -e 's/\\f([A-Z][A-Z]//g' \
  -e 's/\\f[A-Z1-4]//g' -e 's/\\[&%:]//g' "$man_page")"
man_section() { # the text of one .SH section
  awk -v want="$1" '/^\.SH/ { sub(/^\.SH +/, ""); gsub(/"/, ""); on = ($0 == want); next } on' \
    <<<"$man_text"
}
man_options="$(man_section OPTIONS)"
[ -n "$man_options" ] || fail "doc/changegate.8: no OPTIONS section"
names_every_option "doc/changegate.8: --%s (in --help) is not documented under OPTIONS" \
  <<<"$man_options"
names_no_stale_option doc/changegate.8 names foreign <<<"$man_text"

man_endpoints="$(man_section ENDPOINTS)"
for e in "${endpoints[@]}"; do # each has its entry, a tag line such as ".B GET /events"
  grep -qE "^(\.[A-Z]+ +)?\"?GET +$e\"? *\$" <<<"$man_endpoints" ||
    fail "doc/changegate.8: the ENDPOINTS section has no 'GET $e' entry"
done

if command -v groff >/dev/null; then
  out="$(groff -man -ww -z "$man_page" 2>&1)"
  [ -z "$out" ] || fail "groff -man -ww -z doc/changegate.8 warns:"$'\n'"$out"
else
  echo "note: groff not found; the man page's formatting is not checked"
fi
if command -v man >/dev/null; then
  out="$(LC_ALL=C.UTF-8 MANWIDTH=80 MAN_DISABLE_SECCOMP=1 man --warnings -l "$man_page" 2>&1 >/dev/null)"
  [ -z "$out" ] || fail "man --warnings -l doc/changegate.8 warns:"$'\n'"$out"
fi
if command -v lexgrog >/dev/null; then
  lexgrog "$man_page" | grep -q 'changegate - ' ||
    fail "lexgrog finds no NAME line (\"changegate \\- ...\") in doc/changegate.8"
fi

# ---- README.md's options table ----

# The first cell of every row of the table under "### Options".
readme_cells="$(awk '/^#+ / { on = ($0 == "### Options"); next } on && /^\|/' "$readme" |
  cut -d'|' -f2)"
[ -n "$readme_cells" ] || fail "README.md: no options table under '### Options'"
names_every_option "README.md: --%s (in --help) is missing from the options table" \
  <<<"$readme_cells"
names_no_stale_option README.md "the options table names" <<<"$readme_cells"

# ---- the example config file ----

# Its setting lines, as "LINE active|commented NAME".
settings="$(awk '
  /^[ \t]*$/ { settings = 0; next }
  /^[ \t]*#[ \t]*$/ { settings = 1; next }
  /^[ \t]*#/ {
    if (!settings) next
    line = $0; sub(/^[ \t]*#[ \t]*/, "", line); split(line, w, /[ \t]+/)
    print NR, "commented", w[1]; next
  }
  { line = $0; sub(/^[ \t]+/, "", line); split(line, w, /[ \t]+/); print NR, "active", w[1] }
' "$conf")"
declare -A in_conf=()
while read -r n kind name; do
  [ -n "$n" ] || continue
  if [ -z "${is_option[$name]:-}" ]; then
    fail "examples/changegate.conf:$n: '$name' ($kind) is not an option of changegate --help"
  elif [ -n "${cli_only[$name]:-}" ]; then
    fail "examples/changegate.conf:$n: '$name' can only be given on the command line"
  fi
  in_conf[$name]=1
done <<<"$settings"
# In its comments, such as the --check-config command:
names_no_stale_option examples/changegate.conf names <"$conf"
for o in "${options[@]}"; do
  [ -n "${cli_only[$o]:-}" ] || [ -n "${in_conf[$o]:-}" ] ||
    fail "examples/changegate.conf: has no line setting $o (in --help; a config file may set it)"
done

if ! out="$("$changegate" --check-config --config "$conf" --state-dir "$work/state" 2>&1)"; then
  fail "changegate --check-config --config examples/changegate.conf --state-dir DIR fails:"$'\n'"$out"
fi

# Each commented-out setting, uncommented alone, must parse and its value be
# valid. The command line supplies what JWT options need (--auth jwt and a
# 64-byte secret, for HS256 to HS512) and overrides the file's auth. Problems
# that depend on this machine rather than on the value are not counted: a
# socket directory or a key file that does not exist here, a user or group
# unknown here.
head -c 64 /dev/zero | tr '\0' 'k' >"$work/secret"
while read -r n kind name; do
  [ "$kind" = commented ] || continue
  copy="$work/uncommented-$n.conf"
  sed -E "${n}s/^[ \t]*#[ \t]*//" "$conf" >"$copy"
  out="$("$changegate" --check-config --config "$copy" --state-dir "$work/state" \
    --auth jwt --jwt-secret-file "$work/secret" 2>&1)"
  bad="$(awk -v at="$copy:$n: " -v opt="changegate: --$name: " '
    (index($0, at) == 1 && $0 !~ /: no such (user|group) /) || index($0, opt) == 1' <<<"$out")"
  [ -z "$bad" ] || fail "examples/changegate.conf:$n: uncommented, '$(sed -n "${n}p" "$copy")' is refused:"$'\n'"$bad"
done <<<"$settings"

n_commented="$(grep -c ' commented ' <<<"$settings")"
echo "checked ${#options[@]} options of --help (${#cli_only[@]} command-line only) against" \
  "doc/changegate.8, README.md and examples/changegate.conf ($n_commented commented-out settings" \
  "tried one by one), and ${#endpoints[@]} endpoints"
if [ "$failures" -gt 0 ]; then
  echo "test_docs: $failures problem(s)"
  exit 1
fi
echo "test_docs: OK"
