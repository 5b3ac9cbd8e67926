package main

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidetrack/sidetrack/config"
)

// newLogger builds the process logger: JSON in production, a readable
// console format with -dev. Secrets are config.Secret values, whose String
// and JSON forms are masked, so a secret passed as a field never prints.
func newLogger(cfg *config.Config, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	var enc zapcore.Encoder
	if cfg.Log.Format == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	// Sampling keeps a burst of identical messages (an origin outage, a
	// flood of bad beacons) from turning into one line per request.
	core = zapcore.NewSamplerWithOptions(core, 1e9, 20, 100)
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(w))), nil
}
