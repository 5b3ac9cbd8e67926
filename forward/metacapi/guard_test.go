package metacapi_test

import (
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/metacapi"
)

var _ forward.Destination = (*metacapi.Adapter)(nil)
