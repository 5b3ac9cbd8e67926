package kafka_test

import (
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/kafka"
)

var _ forward.Destination = (*kafka.Adapter)(nil)
