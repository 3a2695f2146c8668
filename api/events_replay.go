package api

import (
	"bytes"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/events"
)

// replayRequest is the optional body of an event replay: one endpoint of
// the app (its configured id) instead of all of them.
type replayRequest struct {
	EndpointID string `json:"endpoint_id"`
}

// replayResponse says how many deliveries the replay made due.
type replayResponse struct {
	EventID    string `json:"event_id"`
	App        string `json:"app"`
	Deliveries int    `json:"deliveries"`
}

// replayEvent sends an event again to the endpoints of the app `?app=`
// names (POST /compliance/v1/events/{id}/replay): for an app's staff after
// their receiver lost or refused deliveries. An event of another app is
// 404, like one that does not exist. The replay is audited with the
// deliveries it made due, in the same transaction.
func (d *Deps) replayEvent(c echo.Context) error {
	if err := onlyQuery(c, AppQueryParam); err != nil {
		return err
	}
	appID, err := d.queryApp(c)
	if err != nil {
		return err
	}
	app, ok := d.Apps.App(appID)
	if !ok {
		return errUnknownApp()
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var req replayRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := DecodeStrict(body, &req); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	eventID := c.Param("id")
	staff := staffOf(c)
	n, err := events.Replay(ctx, d.DB, app, eventID, req.EndpointID, d.Clock.Now(), func(tx pgx.Tx, n int) error {
		details := map[string]any{"app": app.ID, "deliveries": n}
		if req.EndpointID != "" {
			details["endpoint_id"] = req.EndpointID
		}
		return d.Auditor.Append(ctx, tx, audit.Entry{
			ActorKind: audit.ActorStaff, Actor: staff.ID, Action: "event.replay", Target: eventID,
			Outcome: audit.OutcomeSuccess, RequestID: staff.RequestID, Details: details,
		})
	})
	if err != nil {
		if kluis.ErrorCode(err) == kluis.ENotFound {
			return kluis.Errorf(kluis.ENotFound, "not found")
		}
		return err
	}
	if d.OnReplay != nil {
		d.OnReplay()
	}
	return c.JSON(http.StatusAccepted, replayResponse{EventID: eventID, App: app.ID, Deliveries: n})
}
