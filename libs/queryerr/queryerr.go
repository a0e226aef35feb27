// Package queryerr maps a query's QueryError to a Connect error that
// carries it as a detail, so clients get the machine-readable code too. The
// query broker and a satellite's direct-mode API answer the same way.
package queryerr

import (
	"errors"

	"connectrpc.com/connect"

	queryv1 "github.com/orbitplane/orbit/proto/orbit/query/v1"
)

// codeFor maps a satellite's error to the RPC code of a single-satellite
// query.
func codeFor(c queryv1.QueryErrorCode) connect.Code {
	switch c {
	case queryv1.QueryErrorCode_QUERY_ERROR_CODE_INVALID_SQL, queryv1.QueryErrorCode_QUERY_ERROR_CODE_READ_ONLY:
		return connect.CodeInvalidArgument
	case queryv1.QueryErrorCode_QUERY_ERROR_CODE_ROW_LIMIT, queryv1.QueryErrorCode_QUERY_ERROR_CODE_BYTE_LIMIT, queryv1.QueryErrorCode_QUERY_ERROR_CODE_TOO_MANY_QUERIES:
		return connect.CodeResourceExhausted
	case queryv1.QueryErrorCode_QUERY_ERROR_CODE_DEADLINE:
		return connect.CodeDeadlineExceeded
	case queryv1.QueryErrorCode_QUERY_ERROR_CODE_CANCELED:
		return connect.CodeCanceled
	case queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_UNAVAILABLE:
		return connect.CodeUnavailable
	case queryv1.QueryErrorCode_QUERY_ERROR_CODE_SATELLITE_NOT_FOUND:
		return connect.CodeNotFound
	}
	return connect.CodeInternal
}

// ToConnect turns qe into a Connect error with qe as a detail.
func ToConnect(qe *queryv1.QueryError, prefix string) error {
	err := connect.NewError(codeFor(qe.Code), errors.New(prefix+qe.Message))
	if d, derr := connect.NewErrorDetail(qe); derr == nil {
		err.AddDetail(d)
	}
	return err
}
