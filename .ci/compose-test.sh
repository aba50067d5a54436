#!/usr/bin/env bash
# .ci/compose-test.sh tests the docker-compose demo end to end, with
# whichever Compose front end is installed (deploy/demo.sh picks it):
#
#   1. the demo as documented: builds the images, runs the simulation to
#      its end, checks the report's invariants, its HTML page, and the
#      coordinators' Prometheus metrics against it, that a second `up` is
#      refused, and that every program reports healthy;
#   2. node and agent loss: a longer run in which one NATS node and one
#      household-agent container are killed (SIGKILL) mid-run and started
#      again; every saga must finish and the ledgers balance;
#   3. scaling: --scale household-agent=4; all four must do work.
#
# Each run uses its own compose project and is torn down with its volumes,
# also when a check fails or the script is interrupted; on failure all the
# logs and reports are kept in a directory the script names. The whole test
# is bounded: under 10 minutes. NATSAGA_COMPOSE_RUNS picks the runs (default
# "demo loss scale"). When no Docker engine answers it prints one line and
# exits 0. Needs Go (the images and the report checker are built from this
# repository) and nothing from any registry.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
	echo "compose test: skipped: no Docker engine answers (docker info failed)"
	exit 0
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
	echo "compose test: skipped: no Compose front end (neither 'docker compose' nor 'docker-compose')"
	exit 0
fi

began=$SECONDS
budget=570 # seconds: the test must end within 10 minutes
project=""
work=$(mktemp -d)

log() { echo "compose test [$((SECONDS - began))s]: $*"; }

demo() { COMPOSE_PROJECT_NAME=$project NATSAGA_SKIP_BUILD=1 deploy/demo.sh "$@"; }

# left prints the seconds left of the budget, at least 10.
left() {
	local l=$((budget - (SECONDS - began)))
	echo $((l > 10 ? l : 10))
}

teardown() {
	[ -n "$project" ] || return 0
	demo down >/dev/null 2>&1 || true
	project=""
}

on_exit() {
	local code=$?
	if [ $code -ne 0 ] && [ -n "$project" ]; then
		local keep
		keep=$(mktemp -d "${TMPDIR:-/tmp}/natsaga-compose-test.XXXXXX")
		demo compose logs --no-color >"$keep/$project.log" 2>&1 || true
		demo report "$keep/$project-report.json" >/dev/null 2>&1 || true
		cp "$work"/*.json "$keep/" 2>/dev/null || true
		log "FAILED; the last logs of $project (all of them, and the reports, are in $keep):"
		demo compose logs --no-color --tail=30 2>&1 | tail -n 200 || true
		# Last, where a shortened copy of this output still shows it: each
		# container's state and restarts, and its last warnings and errors.
		log "the containers of $project, and their last warnings and errors:"
		for id in $(demo compose ps -a -q 2>/dev/null); do
			docker inspect -f '{{.Name}} {{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}} started={{.State.StartedAt}}' "$id" 2>/dev/null || true
			docker logs "$id" 2>&1 | grep -E 'level=(WARN|ERROR)|"level":"(WARN|ERROR)"|panic|fatal' | tail -n 3 | cut -c1-300 || true
		done
	fi
	teardown
	rm -rf "$work"
	if [ $code -ne 0 ]; then
		log "FAILED"
	fi
	exit $code
}
trap on_exit EXIT
trap 'log "line $LINENO: \"$BASH_COMMAND\" failed with $?"' ERR
trap 'exit 130' INT TERM

# check NAME [reportcheck flags]: copies the reports (JSON and HTML) out and
# checks them, and checks that no program met a permissions violation.
check() {
	local name=$1
	shift
	demo report "$work/$name.json"
	go run ./deploy/reportcheck "$@" "$work/$name.json"
	demo report --html "$work/$name.html" >/dev/null
	if ! grep -q 'id="timeline"' "$work/$name.html"; then
		log "$name: the HTML report has no timeline"
		return 1
	fi
	local refused
	refused=$(demo compose logs --no-color 2>&1 | grep -i "permissions violation" || true)
	if [ "$name" = run2 ]; then
		# A node that dies takes with it its users' right to answer the
		# requests that came through it (allow_responses): an answer given
		# after the program reconnected to another node is refused, and
		# the asker sends the request again. Any other refusal counts.
		refused=$(printf '%s\n' "$refused" | grep -v 'for Publish to \\"_INBOX_' || true)
	fi
	if [ -n "$refused" ]; then
		printf '%s\n' "$refused"
		log "$name: a program was refused something its role needs (deploy/nats/auth.conf)"
		return 1
	fi
}

# driver_id prints the driver container of the current project. Pipes take
# their first line with sed, never head: head closes the pipe early, and under
# pipefail the writer's SIGPIPE (exit 141) would fail the script.
driver_id() { demo compose ps -a -q driver | sed -n 1p; }

# ticks_done prints how many ticks the driver has reported so far.
ticks_done() { docker logs "$(driver_id)" 2>/dev/null | grep -c '^tick ' || true; }

# wait_driver waits for the driver to exit and fails unless it exited 0.
wait_driver() {
	local id code
	id=$(driver_id)
	code=$(timeout "$(left)" docker wait "$id") || {
		log "the driver did not finish in time"
		return 1
	}
	docker logs "$id" 2>&1 | tail -n 25
	[ "$code" = 0 ] || {
		log "the driver exited with $code"
		return 1
	}
}

runs=" ${NATSAGA_COMPOSE_RUNS:-demo loss scale} "
wanted() { [[ $runs == *" $1 "* ]]; }

log "building the images"
deploy/build.sh

# 1. The demo as documented.
if wanted demo; then
	project=natsaga-ci-$$-demo
	log "run 1: the demo"
	timeout "$(left)" bash -c 'COMPOSE_PROJECT_NAME=$0 NATSAGA_SKIP_BUILD=1 deploy/demo.sh up' "$project" >"$work/run1.log" 2>&1 || {
		tail -n 40 "$work/run1.log"
		log "run 1: the demo did not end well"
		exit 1
	}
	tail -n 20 "$work/run1.log"
	# The coordinators' metrics, scraped from the host, count the report's
	# sagas.
	metrics=()
	for i in 1 2; do
		port=$(demo compose port --index "$i" coordinator 9090 | sed -n 1p | sed 's/.*://')
		[ -n "$port" ] || {
			log "run 1: no host port for coordinator $i's metrics"
			exit 1
		}
		metrics+=(-metrics "127.0.0.1:$port")
	done
	check run1 "${metrics[@]}"
	# A second up is refused while the first demo is up.
	if demo up >"$work/run1-again.log" 2>&1 || ! grep -q "a demo is up already" "$work/run1-again.log"; then
		cat "$work/run1-again.log"
		log "run 1: a second up was not refused"
		exit 1
	fi
	# Every program reports healthy through its own -healthcheck.
	health_ok=false
	for _ in $(seq 1 30); do
		states=$(for id in $(demo compose ps -q coordinator household-agent government-agent insurer-agent contractor-agent); do
			docker inspect -f '{{.State.Health.Status}}' "$id"
		done | sort | uniq -c | tr -s ' ')
		if [ "$(echo "$states" | sed -n 1p)" = " 8 healthy" ]; then
			health_ok=true
			break
		fi
		sleep 2
	done
	$health_ok || {
		log "run 1: not every program is healthy: $states"
		exit 1
	}
	# The operator lists finished sagas, which the coordinator reads from
	# the bucket under its permissions.
	if ! demo natsaga list -status completed -limit 5 >"$work/run1-list.log" 2>&1 || ! awk '$3 == "completed" { found = 1 } END { exit !found }' "$work/run1-list.log"; then
		cat "$work/run1-list.log"
		log "run 1: the operator could not list the completed sagas"
		exit 1
	fi
	log "run 1: a second up refused; all 8 programs healthy; completed sagas listed"
	teardown
fi

# 2. A NATS node and an agent container die mid-run and come back.
if wanted loss; then
	project=natsaga-ci-$$-loss
	log "run 2: a NATS node and an agent die mid-run"
	export NATSAGA_HOUSEHOLDS=1500 NATSAGA_TICKS=60 NATSAGA_SEED=7
	demo up -d >"$work/run2.log" 2>&1 || {
		tail -n 40 "$work/run2.log"
		exit 1
	}
	# deploy/demo.sh up -d only starts; run 2 drives the rest itself.
	deadline=$((SECONDS + 120))
	until [ "$(ticks_done)" -ge 5 ]; do
		if [ $SECONDS -ge $deadline ]; then
			log "run 2: the simulation did not reach tick 5"
			exit 1
		fi
		sleep 1
	done
	agent=$(demo compose ps -q household-agent | sed -n 1p)
	log "run 2: at tick $(ticks_done): killing nats-2 and household-agent container ${agent:0:12}"
	demo compose kill -s SIGKILL nats-2 >/dev/null 2>&1
	docker kill --signal KILL "$agent" >/dev/null
	before=$(ticks_done)
	sleep 5
	log "run 2: at tick $(ticks_done): starting them again"
	demo compose start nats-2 >/dev/null 2>&1
	docker start "$agent" >/dev/null
	if [ "$(docker inspect -f '{{.State.Status}}' "$(driver_id)")" != running ]; then
		log "run 2: the driver exited while the node and the agent were down (after tick $before)"
	fi
	wait_driver
	check run2
	unset NATSAGA_HOUSEHOLDS NATSAGA_TICKS NATSAGA_SEED
	teardown
fi

# 3. Scaling: four household agents share the work.
if wanted scale; then
	project=natsaga-ci-$$-scale
	log "run 3: --scale household-agent=4"
	timeout "$(left)" bash -c 'COMPOSE_PROJECT_NAME=$0 NATSAGA_SKIP_BUILD=1 deploy/demo.sh up --scale household-agent=4' "$project" >"$work/run3.log" 2>&1 || {
		tail -n 40 "$work/run3.log"
		log "run 3: the scaled demo did not end well"
		exit 1
	}
	check run3 -spread household=4
	teardown
fi

log "passed in $((SECONDS - began))s"
