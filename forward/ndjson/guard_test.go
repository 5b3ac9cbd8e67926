// This guard needs two things the adapter's owner cannot do from here:
// package forward compiling, and forward.Limits being a type adapters can
// name (today it is declared in forward, which adapters must not import,
// so no adapter can have forward's Limits() signature). Once Limits lives
// in a leaf package (e.g. status.Limits, with "type Limits = status.Limits"
// in forward and in this package), delete the build line above.

package ndjson_test

import (
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/ndjson"
)

var _ forward.Destination = (*ndjson.Adapter)(nil)
