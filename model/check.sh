#!/bin/sh
# Verifies the link model: the base model must have no errors, and every mutant named in
# link.pml (#ifdef MUTANT_...) must yield a counterexample. Works in a temporary copy, so nothing
# generated lands in the repository. One line per run; exits non-zero if any expectation fails.
# NICE (default 10) is the niceness spin, gcc and pan run at.
set -u
here=$(cd "$(dirname "$0")" && pwd)
nice="nice -n ${NICE:-10}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/link.pml" "$tmp/"
cd "$tmp" || exit 2

status=0
# run NAME EXPECT [spin flags...]: EXPECT is pass (errors: 0) or fail (errors >= 1).
run() {
    name=$1 expect=$2
    shift 2
    rm -f pan pan.* _spin_nvr.tmp
    if ! $nice spin "$@" -a link.pml >spin.out 2>&1 || ! $nice gcc -O2 -DSAFETY -o pan pan.c 2>gcc.out; then
        echo "FAIL  $name: does not build"; cat spin.out gcc.out; status=1; return
    fi
    $nice ./pan -E >pan.out 2>&1
    line=$(grep -m1 'errors:' pan.out)
    errors=$(echo "$line" | sed -n 's/.*errors: *\([0-9]*\).*/\1/p')
    stored=$(grep -m1 'states, stored' pan.out | awk '{print $1}')
    depth=$(echo "$line" | sed -n 's/.*depth reached \([0-9]*\).*/\1/p')
    what="errors: ${errors:-?}, states stored: ${stored:-?}, depth: ${depth:-?}"
    if [ -z "$errors" ]; then
        echo "FAIL  $name: no verdict from pan"; tail -5 pan.out; status=1
    elif [ "$expect" = pass ] && [ "$errors" -eq 0 ]; then
        echo "ok    $name verifies ($what)"
    elif [ "$expect" = fail ] && [ "$errors" -ge 1 ]; then
        cause=$(grep -m1 -E 'assertion violated|acceptance cycle|claim violated|violated' pan.out)
        echo "ok    $name has a counterexample ($what; $cause)"
    else
        echo "FAIL  $name: expected to $expect ($what)"; status=1
    fi
}

run base pass
mutants=$(sed -n 's/^#ifn*def \(MUTANT_[A-Z_]*\).*/\1/p' link.pml | sort -u)
[ -n "$mutants" ] || { echo "FAIL  no mutants found in link.pml"; status=1; }
for m in $mutants; do
    run "$m" fail "-D$m"
done
# Both at once: the initiator applies its device after COMMIT and resumes data on COMMIT sent.
run "MUTANT_COMMIT_BEFORE_DEVICE_ACK+MUTANT_DATA_BEFORE_COMMIT_ACK" fail \
    -DMUTANT_COMMIT_BEFORE_DEVICE_ACK -DMUTANT_DATA_BEFORE_COMMIT_ACK
exit $status
