package forward

import (
	"errors"
	"fmt"
	"net/netip"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/forward/ga4"
	"github.com/sidetrack/sidetrack/forward/kafka"
	"github.com/sidetrack/sidetrack/forward/metacapi"
	"github.com/sidetrack/sidetrack/forward/ndjson"
	"github.com/sidetrack/sidetrack/forward/webhook"
)

// IPOpener opens an IP sealed by the privacy stage (policy "keep"), for
// adapters that send it to their vendor (Meta's client_ip_address, GA4).
type IPOpener func(sealed string) (netip.Addr, error)

// NewDestinations builds one adapter per cfg.Destinations entry, in
// order, ready for Open. If one fails, those already built are closed.
// openIP may be nil: adapters then never send a full IP.
func NewDestinations(cfg *config.Config, log *zap.Logger, openIP IPOpener) ([]Destination, error) {
	if log == nil {
		log = zap.NewNop()
	}
	out := make([]Destination, 0, len(cfg.Destinations))
	for _, dc := range cfg.Destinations {
		d, err := newDestination(dc, log.Named("destination"), openIP)
		if err != nil {
			for _, built := range out {
				err = errors.Join(err, built.Close())
			}
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// newDestination is the one place that knows every adapter type. Each
// branch checks err before converting, so a failed constructor never
// becomes a non-nil interface holding a nil pointer.
func newDestination(dc config.Destination, log *zap.Logger, openIP IPOpener) (Destination, error) {
	switch dc.Type {
	case config.TypeNDJSON:
		a, err := ndjson.New(dc, log)
		if err != nil {
			return nil, err
		}
		return a, nil
	case config.TypeWebhook:
		a, err := webhook.New(dc, log)
		if err != nil {
			return nil, err
		}
		return a, nil
	case config.TypeGA4:
		var opts []ga4.Option
		if openIP != nil {
			opts = append(opts, ga4.WithIPOpener(openIP))
		}
		a, err := ga4.New(dc, log, opts...)
		if err != nil {
			return nil, err
		}
		return a, nil
	case config.TypeMetaCAPI:
		var opts []metacapi.Option
		if openIP != nil {
			opts = append(opts, metacapi.WithIPOpener(openIP))
		}
		a, err := metacapi.New(dc, log, opts...)
		if err != nil {
			return nil, err
		}
		return a, nil
	case config.TypeKafka:
		a, err := kafka.New(dc, log)
		if err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("destination %q: unknown type %q", dc.Name, dc.Type)
}
