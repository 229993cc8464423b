package backfill

import (
	"github.com/atkafka/atkafka/transform/dagcbor"
	"github.com/atkafka/atkafka/transform/verify"
)

// verifyRepoCommit returns the MST root of a repository CAR.
func verifyRepoCommit(car *dagcbor.CAR, did string) (dagcbor.Link, error) {
	c, err := verify.RepoCommit(car, did)
	if err != nil {
		return nil, err
	}
	return dagcbor.Link(c.Data.Bytes()), nil
}
