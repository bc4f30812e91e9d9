#!/bin/sh
# An Infoblox adapter for `job-service worker --exec Infoblox=examples/worker/infoblox.sh`.
#
# The worker gives the task as JSON on stdin ({"job_id", "task_id", "app", "name", "incoming",
# "attempt"}) and reads the result from stdout ({"finish_state", "outgoing"}); a non-zero exit
# ends the task in error, with what the script wrote to stderr as the error message.
#
# This one stands in for Infoblox's REST API, answering createNetwork as Infoblox would, so
# that it runs anywhere with jq; a real adapter would call the API here, e.g.
#   curl -sf -u "$INFOBLOX_USER:$INFOBLOX_PASSWORD" -d "$body" "$INFOBLOX_URL/wapi/v2.12/network"
set -eu

task=$(cat)
method=$(printf '%s' "$task" | jq -r '.name')

case "$method" in
createNetwork)
    network=$(printf '%s' "$task" | jq -r '.incoming.network // empty')
    if [ -z "$network" ]; then
        echo "createNetwork: incoming network is missing" >&2
        exit 1
    fi
    # Every task may run more than once (a lease that ran out offers it again): creating a
    # network that exists already must answer as creating it did.
    printf '%s' "$task" | jq -c '{
        finish_state: "success",
        outgoing: {result: {
            _ref: ("network/1:" + .incoming.network + "/default"),
            network: .incoming.network,
            comment: (.incoming.comment // ""),
            network_view: "default"
        }}
    }'
    ;;
*)
    echo "Infoblox: this adapter does not implement $method" >&2
    exit 2
    ;;
esac
