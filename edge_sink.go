package main

import (
	"context"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/kafkaspool"
	"github.com/sidetrack/sidetrack/proxy"
)

// edgeSink is what the run command needs from its spool, local or Kafka.
type edgeSink interface {
	proxy.Sink
	proxy.Readiness
	Metrics() *metrics.Set
	Close(ctx context.Context) error
}

// openSink opens the spool of spool.type. The local spool also delivers
// (it is returned as spool too); a Kafka spool only appends, and
// `sidetrack forward` processes deliver from the topic.
func openSink(cfg *config.Config, log *zap.Logger, pool *enrich.EventPool, openIP forward.IPOpener, committed func([][16]byte)) (edgeSink, *forward.Spool, error) {
	if cfg.Spool.Type == "kafka" {
		s, err := kafkaspool.NewSink(cfg, log, pool, kafkaspool.WithCommitted(committed))
		if err != nil {
			return nil, nil, err
		}
		log.Info("spool on kafka: this replica appends, `sidetrack forward` delivers",
			zap.Strings("brokers", cfg.Spool.Brokers), zap.String("topic", cfg.Spool.Topic))
		return s, nil, nil
	}
	dests, err := forward.NewDestinations(cfg, log, openIP)
	if err != nil {
		return nil, nil, err
	}
	spool, err := forward.Open(cfg, dests, log, pool, forward.WithCommitted(committed))
	if err != nil {
		for _, d := range dests {
			_ = d.Close()
		}
		return nil, nil, err
	}
	return spool, spool, nil
}

// idIndex is the durable dedup index: the local spool's, or none (a nil
// interface, not a nil pointer in one).
func idIndex(spool *forward.Spool) enrich.IDIndex {
	if spool == nil {
		return nil
	}
	return spool
}
