package main

import (
	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// sharedSaltStore connects the daily salt to the Redis replicas share:
// join.redis, else dedup.redis. Replicas then hash an IP, and derive
// cookieless ids, with the same salt, so dedup keys and join keys built
// from them agree across replicas. nil when neither is set.
func sharedSaltStore(cfg *config.Config, log *zap.Logger) (*enrich.RedisSaltStore, error) {
	addr := cfg.Join.Redis
	if addr == "" {
		addr = cfg.Dedup.Redis
	}
	if addr == "" {
		return nil, nil
	}
	return enrich.NewRedisSaltStore(addr, log)
}

// saltStore is s as an enrich.SaltStore, nil (not a nil pointer in an
// interface) when there is none.
func saltStore(s *enrich.RedisSaltStore) enrich.SaltStore {
	if s == nil {
		return nil
	}
	return s
}
