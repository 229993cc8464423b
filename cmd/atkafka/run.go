package main

import (
	"context"
	"errors"
)

// wiring builds the real parts for each command.
type wiring struct{}

var errNotYet = errors.New("not available yet in this build")

func (wiring) relay(ctx context.Context, c *config) error { return errNotYet }
func (wiring) tap(ctx context.Context, c *config) error   { return errNotYet }
func (wiring) ozone(ctx context.Context, c *config) error { return errNotYet }
func (wiring) tail(ctx context.Context, c *config) error  { return errNotYet }
