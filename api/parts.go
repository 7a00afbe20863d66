package api

import (
	"net/http"

	"github.com/falocal/falocal/api/files"
)

// minPartSize is S3's least size of a multipart upload's part, the last
// one excepted.
const minPartSize = 5 << 20

// refuseSmallParts checks the parts a complete request lists (in order,
// already matched with the uploaded ones) as S3 checks a
// CompleteMultipartUpload: it keeps err if there is one, else refuses an
// upload with an empty part, or a part before the last that is smaller
// than S3's 5 MiB minimum — or, when the first part is itself smaller, than
// the first part (fal's clients cut parts of one size, only the last
// shorter). A client that sends such parts has lost data on the way:
// fal-client up to 1.0.2 sends the parts of upload(bytes) over 100 MiB
// after the first empty, and would otherwise get back a truncated file.
func refuseSmallParts(err error, parts []files.Part) error {
	if err != nil || len(parts) < 2 {
		return err
	}
	least := min(int64(minPartSize), parts[0].Size)
	for i, p := range parts {
		switch {
		case p.Size == 0:
			return uploadErr(http.StatusBadRequest, "EntityTooSmall: part %d of this upload is empty; "+
				"every part of a multipart upload must hold data (upload the file again; fal-client 1.0.2 and older "+
				"send empty parts for uploads over 100 MiB: upgrade to 1.0.3 or later)", p.Number)
		case i < len(parts)-1 && p.Size < least:
			return uploadErr(http.StatusBadRequest, "EntityTooSmall: part %d of this upload holds %d bytes; "+
				"every part but the last must hold at least %d bytes (5 MiB, or the first part's size if smaller)",
				p.Number, p.Size, least)
		}
	}
	return nil
}
