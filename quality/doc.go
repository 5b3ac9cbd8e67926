// Package quality watches how complete and consistent the event stream is,
// as opposed to whether it flows: per canonical event name, the share of
// events carrying a click id, granted consent, a hashed email, a valid
// source/medium or a joined browser id, the direct share, and schema
// violations by field, over sliding windows; names the naming stage did
// not know (tracking-plan drift); reconciliation of backend orders with
// browser purchases by transaction id; and threshold alerts computed from
// all of it (config `alerts:`).
//
// A Tracker is an observer of the proxy's request path (it implements
// proxy.EventObserver without importing proxy): it keeps fixed-size
// counters in one-minute buckets, so memory is bounded and an observed
// event costs a map lookup and a few increments, with no allocation once
// its name has been seen. Figures are read by /metrics (gauges computed at
// scrape time) and by the status page (Snapshot).
package quality
