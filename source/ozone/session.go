package ozone

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

const (
	createSessionNSID  = "com.atproto.server.createSession"
	refreshSessionNSID = "com.atproto.server.refreshSession"

	// refreshMargin is how long before its exp an access token is refreshed; short-lived tokens are refreshed
	// when a quarter of their lifetime is left instead.
	refreshMargin = time.Minute
)

// errCredentials marks a login the PDS rejected for good (wrong identifier or password, account taken down).
var errCredentials = errors.New("ozone: the PDS rejected the moderator credentials")

// session holds the moderator's PDS tokens.
type session struct {
	did     string
	access  string
	refresh string
	renewAt time.Time // when to refresh the access token; zero when its exp could not be read
}

// authenticator keeps a valid access token: it logs in, refreshes before expiry and logs in again when a refresh
// fails. It is used by the polling goroutine only.
type authenticator struct {
	xrpc       *xrpcClient
	identifier string
	password   string
	log        *slog.Logger
	now        func() time.Time
	obs        Observer
	sess       *session
}

// token returns an access token, refreshing or logging in first when needed.
func (a *authenticator) token(ctx context.Context) (string, error) {
	if a.sess == nil {
		if err := a.login(ctx); err != nil {
			return "", err
		}
	} else if !a.sess.renewAt.IsZero() && !a.now().Before(a.sess.renewAt) {
		if err := a.renew(ctx); err != nil {
			return "", err
		}
	}
	return a.sess.access, nil
}

// rejected tells the authenticator the PDS refused its access token. It reports whether the request is worth
// repeating with a new token: an expired token is refreshed, an invalid one (the PDS lost its sessions) replaced
// by a new login.
func (a *authenticator) rejected(err error) bool {
	switch errorName(err) {
	case "ExpiredToken":
		if a.sess != nil {
			a.sess.renewAt = a.now()
		}
		return true
	case "InvalidToken":
		a.sess = nil
		return true
	}
	return false
}

// renew refreshes the session, falling back to a new login when the refresh token is refused or the PDS is not
// reachable for the refresh (a login then either works or fails the same way).
func (a *authenticator) renew(ctx context.Context) error {
	err := a.refresh(ctx)
	if err == nil || ctx.Err() != nil {
		return err
	}
	a.log.Info("ozone session refresh failed; logging in again", "err", err)
	a.sess = nil
	return a.login(ctx)
}

func (a *authenticator) login(ctx context.Context) error {
	body := map[string]string{"identifier": a.identifier, "password": a.password}
	data, err := a.xrpc.call(ctx, http.MethodPost, createSessionNSID, nil, body, nil)
	if err != nil {
		a.obs.Auth("login", false)
		if !isTransient(err) {
			// The PDS's own message ("Invalid identifier or password") is kept; it never echoes the password.
			return fmt.Errorf("%w: log in to %s as %q: %v", errCredentials, a.xrpc.host, a.identifier, err)
		}
		return fmt.Errorf("log in to %s: %w", a.xrpc.host, err)
	}
	return a.store("login", data)
}

func (a *authenticator) refresh(ctx context.Context) error {
	headers := map[string]string{"Authorization": "Bearer " + a.sess.refresh}
	data, err := a.xrpc.call(ctx, http.MethodPost, refreshSessionNSID, nil, nil, headers)
	if err != nil {
		a.obs.Auth("refresh", false)
		return err
	}
	return a.store("refresh", data)
}

// store keeps the tokens of a createSession or refreshSession answer.
func (a *authenticator) store(kind string, data []byte) error {
	var out struct {
		DID        string `json:"did"`
		AccessJwt  string `json:"accessJwt"`
		RefreshJwt string `json:"refreshJwt"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.AccessJwt == "" || out.RefreshJwt == "" {
		a.obs.Auth(kind, false)
		return fmt.Errorf("%s: answer without tokens", kind)
	}
	a.obs.Auth(kind, true)
	a.sess = &session{did: out.DID, access: out.AccessJwt, refresh: out.RefreshJwt, renewAt: renewTime(out.AccessJwt, a.now())}
	return nil
}

// renewTime reads exp (and iat) from a JWT without verifying it, which is fine: the PDS verifies, this only
// decides when to ask for a new token. It returns zero when the token has no readable exp.
func renewTime(jwt string, now time.Time) time.Time {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp int64 `json:"exp"`
		Iat int64 `json:"iat"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Time{}
	}
	exp := time.Unix(claims.Exp, 0)
	issued := now
	if claims.Iat != 0 {
		issued = time.Unix(claims.Iat, 0)
	}
	return exp.Add(-min(refreshMargin, exp.Sub(issued)/4))
}
