package forward

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// bbolt's Bucket.Get and Bucket.Delete each allocate a cursor and grow its
// stack; the group commit and the delivery reader touch a few keys per
// event, so they reuse one cursor per bucket and transaction instead.
// A cursor is repositioned by every call, so changes made in between (in
// the same transaction) are fine.

// seekGet is Bucket.Get through c: key's value, nil when absent (or a
// nested bucket).
func seekGet(c *bolt.Cursor, key []byte) []byte {
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// seekDelete is Bucket.Delete through c: absent keys are not an error.
func seekDelete(c *bolt.Cursor, key []byte) error {
	k, _ := c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return c.Delete()
}
