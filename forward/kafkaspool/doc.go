// Package kafkaspool puts the spool on Kafka for deployments with many
// edge replicas (docs/deployment.md): Sink appends accepted events to one
// topic and acknowledges only after every in-sync replica has them; Source
// consumes that topic in one consumer group per destination and feeds the
// delivery core (forward.Feed), committing a partition's offset only past
// records that were delivered or dead-lettered.
//
// Records: the value is the event encoding of the local spool
// (enrich.Event.AppendJSON), the key is the event id, and headers carry the
// append time and the visitor (device id, else anonymous id, else user id,
// else event id). Partitions are chosen by the visitor, so one device's
// events stay in order. Dead letters go to <topic>.dlq.<destination> and
// quarantined events to <topic>.quarantine, with the same value and the
// reason in headers.
//
// Like an adapter, the package imports enrich, config and forward/status,
// never forward or proxy: it satisfies proxy.Sink and forward.Log
// structurally, and main wires it.
package kafkaspool
