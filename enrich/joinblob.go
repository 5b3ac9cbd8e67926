package enrich

import (
	"encoding/binary"
	"time"
	"unsafe"
)

// The join cache stores each browser context as one immutable byte blob
// rather than a struct of strings: one pointer-free allocation per
// context (the garbage collector does not scan it, while a cache of a
// hundred thousand visitors' structs was most of what it had to scan), and
// about a third of the memory. Strings decoded from a blob alias it; it is
// never written after it is stored, so they stay valid as long as anything
// refers to them.
//
// Layout: flags (gpc, which times are set), the four consent states, the
// GA session number and the set times as varints (UTC unix ns), then every
// string of joinCtx.strs as a uvarint length and its bytes.

const (
	blobGPC = 1 << iota
	blobClickAt
	blobFirstAt
	blobLastAt
)

// strs lists the context's strings in blob order.
func (c *joinCtx) strs() [26]*string {
	return [...]*string{
		&c.deviceID, &c.anonymousID, &c.sessionID, &c.gaSessionID, &c.fbc, &c.fbp,
		&c.clickIDs.GCLID, &c.clickIDs.GBRAID, &c.clickIDs.WBRAID, &c.clickIDs.DCLID,
		&c.clickIDs.SRSLTID, &c.clickIDs.FBCLID, &c.clickIDs.MSCLKID, &c.clickIDs.TTCLID,
		&c.clickIDs.LiFatID, &c.clickIDs.TWCLID,
		&c.firstTouch.Source, &c.firstTouch.Medium, &c.firstTouch.Campaign,
		&c.firstTouch.Channel, &c.firstTouch.ClickIDKind,
		&c.lastTouch.Source, &c.lastTouch.Medium, &c.lastTouch.Campaign,
		&c.lastTouch.Channel, &c.lastTouch.ClickIDKind,
	}
}

// appendBlob appends c's encoding to dst.
func (c *joinCtx) appendBlob(dst []byte) []byte {
	var flags byte
	if c.gpc {
		flags |= blobGPC
	}
	times := [...]struct {
		t    time.Time
		flag byte
	}{{c.clickAt, blobClickAt}, {c.firstTouch.At, blobFirstAt}, {c.lastTouch.At, blobLastAt}}
	for _, t := range times {
		if !t.t.IsZero() {
			flags |= t.flag
		}
	}
	dst = append(dst, flags, byte(c.analytics), byte(c.ads), byte(c.adUserData), byte(c.adPers))
	dst = binary.AppendVarint(dst, c.gaSessionNumber)
	for _, t := range times {
		if !t.t.IsZero() {
			dst = binary.AppendVarint(dst, t.t.UnixNano())
		}
	}
	for _, s := range c.strs() {
		dst = binary.AppendUvarint(dst, uint64(len(*s)))
		dst = append(dst, *s...)
	}
	return dst
}

// fromBlob decodes b (from appendBlob) into c; its strings alias b. It
// reports false for a malformed blob, which appendBlob never produces.
func (c *joinCtx) fromBlob(b []byte) bool {
	*c = joinCtx{}
	if len(b) < 5 {
		return false
	}
	flags := b[0]
	c.gpc = flags&blobGPC != 0
	c.analytics, c.ads, c.adUserData, c.adPers = ConsentState(b[1]), ConsentState(b[2]), ConsentState(b[3]), ConsentState(b[4])
	b = b[5:]
	v, n := binary.Varint(b)
	if n <= 0 {
		return false
	}
	c.gaSessionNumber, b = v, b[n:]
	for _, t := range [...]struct {
		dst  *time.Time
		flag byte
	}{{&c.clickAt, blobClickAt}, {&c.firstTouch.At, blobFirstAt}, {&c.lastTouch.At, blobLastAt}} {
		if flags&t.flag == 0 {
			continue
		}
		v, n := binary.Varint(b)
		if n <= 0 {
			return false
		}
		*t.dst, b = time.Unix(0, v).UTC(), b[n:]
	}
	for _, s := range c.strs() {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return false
		}
		b = b[n:]
		if l > 0 {
			*s = unsafe.String(&b[0], int(l))
		}
		b = b[l:]
	}
	return len(b) == 0
}
