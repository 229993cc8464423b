package backfill

import (
	"encoding/json"
	"fmt"
	"time"
)

// Work is one work record: a repository to load, keyed by its DID in the work topic. Plan writes the listRepos
// fields; Run adds the retry fields when it puts a repository back after a transient failure, and After when it
// puts back the rest of a repository too large for one transaction.
type Work struct {
	DID    string `json:"did"`
	Head   string `json:"head,omitempty"`
	Rev    string `json:"rev,omitempty"`
	Active *bool  `json:"active,omitempty"` // nil when the listing did not say (listReposByCollection): active
	Status string `json:"status,omitempty"`

	// After is the last MST key ("collection/rkey") an earlier transaction produced: the repository, fetched
	// again, is loaded from the key after it. Records the account wrote meanwhile before After are the live
	// firehose's (the newest rev wins).
	After string `json:"after,omitempty"`
	// Slow marks a repository whose loading outlasted its batch's producing time: its next batch produces
	// nothing until it is loaded, so that the transaction's time is not spent waiting for it.
	Slow bool `json:"slow,omitempty"`

	// Attempt counts the transient failures so far; FirstFailure is when the first happened (the retry window
	// starts there) and NotBefore when the next attempt is due.
	Attempt      int       `json:"attempt,omitempty"`
	FirstFailure time.Time `json:"firstFailure,omitzero"`
	NotBefore    time.Time `json:"notBefore,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// inactive reports whether the listing said the account is not active (deleted, takendown, deactivated…).
func (w *Work) inactive() bool { return w.Active != nil && !*w.Active }

func (w *Work) encode() []byte {
	b, _ := json.Marshal(w) // cannot fail: strings, bools, ints and times
	return b
}

func decodeWork(b []byte) (*Work, error) {
	var w Work
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("work record: %w", err)
	}
	if w.DID == "" {
		return nil, fmt.Errorf("work record without a did")
	}
	return &w, nil
}
