// These guards need package forward (the delivery core, written by others
// at the same time) and enrich's privacy stage to compile; the adapter's
// own tests do not.

package ga4_test

import (
	"net/netip"

	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/ga4"
)

var (
	_ forward.Destination = (*ga4.Adapter)(nil)
	// main passes the privacy stage's OpenIP to ga4.WithIPOpener.
	_ func(string) (netip.Addr, error) = (*enrich.Privacy)(nil).OpenIP
)
