package labels

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/atkafka/atkafka/metrics"
	"github.com/atkafka/atkafka/transform/frame"
)

// VerifyMode is what --verify-labels does with each label's signature.
type VerifyMode uint8

// The verification modes.
const (
	// VerifyOff checks nothing.
	VerifyOff VerifyMode = iota
	// VerifyLog checks, counts and logs failures, and produces every label anyway.
	VerifyLog
	// VerifyStrict dead-letters the labels that fail, with the reason.
	VerifyStrict
)

// VerifyModes are the accepted --verify-labels values, in VerifyMode order.
var VerifyModes = []string{"off", "log", "strict"}

// ParseVerifyMode reads a --verify-labels value.
func ParseVerifyMode(s string) (VerifyMode, error) {
	for i, m := range VerifyModes {
		if s == m {
			return VerifyMode(i), nil
		}
	}
	return 0, fmt.Errorf("--verify-labels %q is not one of off, log, strict", s)
}

// keyTimeout bounds one key lookup: the labeler's stream waits meanwhile.
const keyTimeout = 10 * time.Second

// rejection is why a label failed verification; kind is a bounded metric label and dead-letter reason.
type rejection struct {
	kind string
	err  error
}

// verify checks l's signature against its src's #atproto_label key. A failure fetches the key again once (the
// labeler may have rotated it) before it counts.
func (lb *labeler) verify(ctx context.Context, l *frame.Label) *rejection {
	r := lb.check(ctx, l)
	metrics.LabelVerifications.WithLabelValues(lb.name, resultOf(r)).Inc()
	return r
}

func resultOf(r *rejection) string {
	if r == nil {
		return "ok"
	}
	return r.kind
}

func (lb *labeler) check(ctx context.Context, l *frame.Label) *rejection {
	if len(l.Sig) == 0 {
		return &rejection{"unsigned", errors.New("the label carries no signature")}
	}
	unsigned := l.Unsigned(nil)
	var err error
	for _, refresh := range []bool{false, true} {
		kctx, cancel := context.WithTimeout(ctx, keyTimeout)
		key, kerr := lb.s.cfg.Directory.LabelKey(kctx, string(l.Src), refresh)
		cancel()
		if kerr != nil {
			return &rejection{"key_unavailable", kerr}
		}
		if err = key.HashAndVerify(unsigned, l.Sig); err == nil {
			return nil
		}
	}
	return &rejection{"failed", fmt.Errorf("signature does not verify with the #atproto_label key of %s: %w", l.Src, err)}
}
