package enrich

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// dialShared connects to the Redis that replicas share for the join and
// the daily salt (host:port or a redis:// URL). A Redis that is down at
// start is not an error: the client reconnects on use, and each user falls
// back to what this replica knows meanwhile. path names the config key in
// errors.
func dialShared(path, addr string, log *zap.Logger) (rueidis.Client, error) {
	var opt rueidis.ClientOption
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = rueidis.ParseURL(addr); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	} else {
		opt.InitAddress = []string{addr}
	}
	opt.ForceSingleClient = true
	opt.DisableCache = true
	opt.Dialer.Timeout = time.Second
	opt.ConnWriteTimeout = 5 * time.Second
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err != nil && log != nil {
		log.Warn(path+": Redis unreachable at start; using this replica's own state until it answers", zap.Error(err))
	}
	return c, nil
}

// RedisSaltStore is the SaltStore replicas share through Redis: one key
// per UTC day, set with SET NX and a TTL, so the first replica to rotate
// decides the day's salt for all. The Redis must not persist (no RDB or
// AOF): a salt must never reach a disk (docs/deployment.md).
type RedisSaltStore struct {
	c rueidis.Client
}

const saltRedisPrefix = "sidetrack:salt:"

// NewRedisSaltStore connects to addr (host:port or redis:// URL).
func NewRedisSaltStore(addr string, log *zap.Logger) (*RedisSaltStore, error) {
	c, err := dialShared("daily salt redis", addr, log)
	if err != nil {
		return nil, err
	}
	return &RedisSaltStore{c: c}, nil
}

// Get implements SaltStore.
func (s *RedisSaltStore) Get(ctx context.Context, day string) ([]byte, bool, error) {
	b, err := s.c.Do(ctx, s.c.B().Get().Key(saltRedisPrefix+day).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// SetNX implements SaltStore.
func (s *RedisSaltStore) SetNX(ctx context.Context, day string, salt []byte, ttl time.Duration) ([]byte, error) {
	key := saltRedisPrefix + day
	err := s.c.Do(ctx, s.c.B().Set().Key(key).Value(rueidis.BinaryString(salt)).Nx().PxMilliseconds(max(ttl.Milliseconds(), 1)).Build()).Error()
	switch {
	case err == nil:
		return salt, nil
	case !rueidis.IsRedisNil(err):
		return nil, err
	}
	// Another replica was first: its salt is the day's.
	stored, ok, err := s.Get(ctx, day)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("daily salt for %s vanished from Redis", day)
	}
	return stored, nil
}

// Close closes the connection.
func (s *RedisSaltStore) Close() { s.c.Close() }
