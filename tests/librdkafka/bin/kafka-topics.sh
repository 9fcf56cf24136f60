#!/usr/bin/env bash
# Stand-in for Apache Kafka's bin/kafka-topics.sh, for librdkafka's own test suite (which
# creates and deletes some topics with it, e.g. test 0077): the same arguments, done with
# the `strata` CLI. STRATA_CLI names the binary.
#
#   kafka-topics.sh --bootstrap-server B --create --topic T --partitions N
#                   --replication-factor R [--config k=v]...
#   kafka-topics.sh --bootstrap-server B --delete --topic T
set -euo pipefail

cli="${STRATA_CLI:?STRATA_CLI must name the strata binary}"
bootstrap="" action="" topic="" partitions="" replication=""
configs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bootstrap-server) bootstrap="$2"; shift 2 ;;
        --create) action=create; shift ;;
        --delete) action=delete; shift ;;
        --topic) topic="$2"; shift 2 ;;
        --partitions) partitions="$2"; shift 2 ;;
        --replication-factor) replication="$2"; shift 2 ;;
        --config) configs+=(--config "$2"); shift 2 ;;
        *) echo "kafka-topics.sh stand-in: unsupported argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$bootstrap" ] && [ -n "$topic" ] || { echo "need --bootstrap-server and --topic" >&2; exit 2; }
case "$action" in
    create)
        args=(topic create "$topic")
        [ -n "$partitions" ] && args+=(--partitions "$partitions")
        [ -n "$replication" ] && args+=(--replication-factor "$replication")
        exec "$cli" --bootstrap-server "$bootstrap" "${args[@]}" "${configs[@]}"
        ;;
    delete)
        exec "$cli" --bootstrap-server "$bootstrap" topic delete "$topic"
        ;;
    *) echo "need --create or --delete" >&2; exit 2 ;;
esac
