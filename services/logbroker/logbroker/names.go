package logbroker

import "github.com/orbitplane/orbit/libs/logstream"

// The layout of streams on JetStream is libs/logstream's, shared with
// direct publishers.
const (
	subjectPrefix = logstream.SubjectPrefix
	cursorPrefix  = logstream.CursorPrefix
	// CursorStream is the compacted JetStream stream holding cursors.
	CursorStream = logstream.CursorStream
	hdrKey       = logstream.HdrKey
	hdrSubject   = logstream.HdrSubject
	metaTenant   = logstream.MetaTenant
	metaName     = logstream.MetaName
	metaSubject  = logstream.MetaSubject
	metaCompact  = logstream.MetaCompact
	// MaxNameBytes bounds a stream name.
	MaxNameBytes = logstream.MaxNameBytes
	// MaxSubjectBytes bounds a stream's or a message's subject.
	MaxSubjectBytes = logstream.MaxSubjectBytes
	// MaxKeyBytes bounds a message key.
	MaxKeyBytes = logstream.MaxKeyBytes
	// MaxHeaders bounds the headers of one message.
	MaxHeaders = logstream.MaxHeaders
	// MaxDedupIDBytes bounds a dedup ID.
	MaxDedupIDBytes = logstream.MaxDedupIDBytes
)

var (
	validName     = logstream.ValidName
	jsName        = logstream.JSName
	validSubject  = logstream.ValidSubject
	natsSubject   = logstream.NATSSubject
	userSubject   = logstream.UserSubject
	keyedPattern  = logstream.KeyedPattern
	cursorSubject = logstream.CursorSubject
)
