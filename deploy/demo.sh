#!/bin/sh
# deploy/demo.sh runs natsaga's docker-compose demo (docker-compose.yml) with
# whichever Compose front end is installed: `docker compose` (v2) or
# `docker-compose` (v1).
#
#   deploy/demo.sh up [-d] [--reset] [--scale household-agent=4 ...]
#       build the images (deploy/build.sh), start the cluster, the
#       coordinator, the agents and the driver, follow the driver to the end
#       of the simulation; exits with the driver's exit code (0: the
#       invariants hold). Everything else keeps running until `down`.
#       With -d, return once everything is started. A demo that is up
#       already is refused; --reset removes it (volumes too) first.
#   deploy/demo.sh url USER
#       print a NATS URL with USER's demo password for a client on this
#       host, for example `nats -s "$(deploy/demo.sh url admin)" stream ls`
#       or `nats -s "$(deploy/demo.sh url system)" server report jetstream`.
#   deploy/demo.sh report [FILE]
#       print the driver's JSON report, or copy it to FILE.
#   deploy/demo.sh report --html FILE
#       copy the driver's HTML report (plots; self-contained) to FILE.
#   deploy/demo.sh down
#       stop and remove everything, volumes included.
#   deploy/demo.sh natsaga ARGS...
#       run the operator's tool (cmd/natsaga) as the operator user, for
#       example `summary`, `list -status failed`, `events -n 10`, `services`.
#   deploy/demo.sh compose ARGS...
#       any other Compose command, for example `ps`, `logs coordinator`,
#       `stop nats-2`, `port nats-1 4222`, `up -d --scale
#       household-agent=3 household-agent`: with the scenario `up` started
#       (kept in ~/.local/state/natsaga/demo-PROJECT.env until `down`), so
#       that it adds copies and recreates nothing. Name the service: a bare
#       `up` starts the driver again once its run has ended, which plays
#       the scenario again on the spent ledgers and fails.
#
# Environment: NATSAGA_HOUSEHOLDS (200), NATSAGA_TICKS (30), NATSAGA_SEED (1)
# choose the scenario; the opening ledgers are sized for it by
# `floodsim -plan`. NATSAGA_SKIP_BUILD=1 uses the images already built.
# COMPOSE_PROJECT_NAME (natsaga) separates concurrent demos.
# NATSAGA_COMPOSE_OVERRIDE names a second compose file laid over
# docker-compose.yml, for example deploy/official-nats.yml.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
project=${COMPOSE_PROJECT_NAME:-natsaga}
tag=${NATSAGA_TAG:-local}

die() {
	echo "demo.sh: $*" >&2
	exit 1
}

# compose runs the installed Compose front end on docker-compose.yml (and
# the override, if any).
compose() {
	if [ -n "${NATSAGA_COMPOSE_OVERRIDE:-}" ]; then
		set -- -f "$NATSAGA_COMPOSE_OVERRIDE" "$@"
	fi
	set -- -p "$project" -f "$root/docker-compose.yml" "$@"
	if docker compose version >/dev/null 2>&1; then
		docker compose "$@"
	elif command -v docker-compose >/dev/null 2>&1; then
		# v1 honours deploy.replicas only in compatibility mode.
		docker-compose --compatibility "$@"
	else
		die "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed"
	fi
}

# driver_id prints the driver container's id, running or exited.
driver_id() {
	compose ps -a -q driver 2>/dev/null | sed -n 1p
}

# json_int FIELD reads an integer field of the JSON on stdin.
json_int() {
	tr -d ' \n' | sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p"
}

# agents_expected ARGS... counts the agent containers `up ARGS` runs: the
# compose defaults (2 household, 2 government, 1 insurer, 1 contractor)
# unless a --scale argument says otherwise.
agents_expected() {
	household=2 government=2 insurer=1 contractor=1
	while [ $# -gt 0 ]; do
		arg=$1
		shift
		case $arg in
		--scale)
			[ $# -gt 0 ] || die "--scale needs SERVICE=NUM"
			arg="--scale=$1"
			shift
			;;
		esac
		case $arg in
		--scale=household-agent=*) household=${arg#--scale=household-agent=} ;;
		--scale=government-agent=*) government=${arg#--scale=government-agent=} ;;
		--scale=insurer-agent=*) insurer=${arg#--scale=insurer-agent=} ;;
		--scale=contractor-agent=*) contractor=${arg#--scale=contractor-agent=} ;;
		esac
	done
	echo $((household + government + insurer + contractor))
}

up() {
	detach=false
	reset=false
	for arg in "$@"; do
		shift
		case $arg in
		-d | --detach) detach=true ;;
		--reset) reset=true ;;
		*) set -- "$@" "$arg" ;;
		esac
	done
	# A second up would replay the scenario on the ledgers the first one
	# spent: refuse, or start from scratch with --reset.
	if [ -n "$(compose ps -a -q 2>/dev/null)" ]; then
		if ! $reset; then
			die "a demo is up already (project $project): 'deploy/demo.sh report' shows its report;" \
				"'deploy/demo.sh up --reset' removes it, volumes included, and starts again;" \
				"'deploy/demo.sh down' only removes it"
		fi
		echo "demo.sh: --reset: removing the demo that is up (project $project), volumes included"
		compose down -v --remove-orphans
	fi
	if [ "${NATSAGA_SKIP_BUILD:-}" != 1 ]; then
		"$root/deploy/build.sh"
	fi
	export NATSAGA_HOUSEHOLDS="${NATSAGA_HOUSEHOLDS:-200}" NATSAGA_TICKS="${NATSAGA_TICKS:-30}" NATSAGA_SEED="${NATSAGA_SEED:-1}"
	plan=$(docker run --rm --network none --entrypoint /floodsim "natsaga/natsaga:$tag" -plan \
		-households "$NATSAGA_HOUSEHOLDS" -ticks "$NATSAGA_TICKS" -seed "$NATSAGA_SEED") ||
		die "floodsim -plan failed (were the images built? run deploy/build.sh)"
	NATSAGA_BUDGET=$(echo "$plan" | json_int government_budget)
	NATSAGA_FUND=$(echo "$plan" | json_int insurer_fund)
	NATSAGA_EXPECT_AGENTS=$(agents_expected "$@")
	export NATSAGA_BUDGET NATSAGA_FUND NATSAGA_EXPECT_AGENTS
	mkdir -p "$(dirname "$scenario")"
	for k in $scenario_vars; do
		eval "echo \"$k=\${$k}\""
	done >"$scenario"
	echo "demo.sh: $NATSAGA_HOUSEHOLDS households, $NATSAGA_TICKS ticks, seed $NATSAGA_SEED;" \
		"budget $NATSAGA_BUDGET cents, fund $NATSAGA_FUND cents; $NATSAGA_EXPECT_AGENTS agents"
	compose up -d "$@"
	id=$(driver_id)
	[ -n "$id" ] || die "the driver did not start"
	if $detach; then
		echo "demo.sh: started; follow with: deploy/demo.sh compose logs -f driver"
		return 0
	fi
	echo "demo.sh: following the driver (Ctrl-C stops following, not the demo)"
	docker logs -f "$id" || true
	code=$(docker wait "$id")
	echo "demo.sh: the driver exited with $code. Report: deploy/demo.sh report;" \
		"remove everything: deploy/demo.sh down"
	return "$code"
}

# scenario_vars are the settings docker-compose.yml takes from up; up
# keeps them in $scenario, and a Compose command after it takes them from
# there (those not set in the environment): with others, Compose would
# recreate the services, and the driver would replay a scenario.
scenario_vars="NATSAGA_HOUSEHOLDS NATSAGA_TICKS NATSAGA_SEED NATSAGA_BUDGET NATSAGA_FUND NATSAGA_EXPECT_AGENTS"
scenario="${XDG_STATE_HOME:-${HOME:-/tmp}/.local/state}/natsaga/demo-$project.env"

# same_scenario exports the settings up kept, when it kept any.
same_scenario() {
	[ -f "$scenario" ] || return 0
	while IFS='=' read -r k v; do
		case " $scenario_vars " in
		*" $k "*) eval "[ -n \"\${$k+x}\" ]" || export "$k=$v" ;;
		esac
	done <"$scenario"
}

report() {
	id=$(driver_id)
	[ -n "$id" ] || die "no driver container: run deploy/demo.sh up first"
	# floodsim makes its report files as it starts, and writes them at
	# the end.
	[ "$(docker inspect -f '{{.State.Running}}' "$id")" = false ] ||
		die "no report yet: the driver writes it when the simulation ends (follow it: deploy/demo.sh compose logs -f driver)"
	if [ "${1:-}" = --html ]; then
		[ $# -eq 2 ] || die "report --html FILE"
		docker cp "$id:/report/report.html" "$2" ||
			die "no HTML report yet: the driver writes it when the simulation ends"
		echo "demo.sh: HTML report in $2 (open it in any browser; it needs no network)"
		return
	fi
	if [ $# -gt 0 ]; then
		docker cp "$id:/report/report.json" "$1"
		return
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	docker cp "$id:/report/report.json" "$tmp/report.json" ||
		die "no report: the driver writes it when the simulation ends, and it exited $(docker inspect -f '{{.State.ExitCode}}' "$id") without one (its reason: deploy/demo.sh compose logs driver)"
	cat "$tmp/report.json"
}

# url USER prints nats://USER:PASSWORD@127.0.0.1:PORT for nats-1's client
# port on this host.
url() {
	[ $# -eq 1 ] || die "url USER (admin, system, operator, ...)"
	case $1 in
	admin | system | operator | driver | coordinator | household | government | insurer | contractor) ;;
	*) die "url: unknown user $1" ;;
	esac
	port=$(compose port nats-1 4222 | sed -n 1p | sed 's/.*://')
	[ -n "$port" ] || die "nats-1 is not up"
	echo "nats://$1:$1-demo@127.0.0.1:$port"
}

cmd=${1:-}
[ $# -eq 0 ] || shift
case $cmd in
up) up "$@" ;;
report) report "$@" ;;
url) url "$@" ;;
down)
	compose down -v --remove-orphans
	rm -f "$scenario"
	;;
natsaga)
	[ -n "$(compose ps -q 2>/dev/null)" ] || die "no demo is up (project $project): deploy/demo.sh up"
	same_scenario
	compose run --rm --no-deps -e NATS_USER=operator -e NATS_PASSWORD=operator-demo \
		-e NATS_INBOX_PREFIX=_INBOX_operator --entrypoint /natsaga driver "$@"
	;;
compose)
	same_scenario
	compose "$@"
	;;
*)
	sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
