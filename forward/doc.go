// Package forward delivers accepted events to destinations. It owns the
// sink the proxy appends to and, per destination, the path from stored
// events to the adapter in forward/<dest>.
//
// forward imports enrich and config only; adapters import enrich and config,
// never forward, and forward reaches them through small interfaces of its own.
package forward
