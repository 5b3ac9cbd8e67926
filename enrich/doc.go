// Package enrich owns the canonical Event (DESIGN §3) and the Pipeline of
// small stages that make every event complete, consistent and privacy-safe
// before it is stored: consent → identity → attribution → geo → privacy →
// bot → naming → validation → join → dedup.
//
// Lifetimes: Events and Requests own their bytes (Intern copies into a
// per-object arena) so nothing points into the HTTP server's reused
// buffers. They are pooled; whoever owns an event last releases it, and no
// string taken from it may be used after that without strings.Clone.
//
// enrich imports only config: the proxy calls into it, forward reads its
// events, and neither is known here.
package enrich
