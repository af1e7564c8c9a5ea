package inspect

import (
	"bytes"
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdkit/etcdkit/internal/etcdfmt"
)

// Auth is what the auth buckets hold. Users carry no password hash.
type Auth struct {
	Enabled  bool
	Revision uint64
	Users    []*authpb.User // by name; Password always nil
	Roles    []*authpb.Role // by name
}

// ReadAuth reads auth's state, users and roles in one checked pass.
func ReadAuth(ctx context.Context, o *Opened) (*Auth, error) {
	a := &Auth{}
	visit := func(bucket, k, v []byte) error {
		var err error
		switch {
		case bytes.Equal(bucket, etcdfmt.BucketAuth):
			switch {
			case bytes.Equal(k, etcdfmt.AuthEnabled):
				a.Enabled = len(v) == 1 && v[0] == 1
			case bytes.Equal(k, etcdfmt.AuthRevision):
				a.Revision, err = etcdfmt.ParseUint64(v)
			}
		case bytes.Equal(bucket, etcdfmt.BucketAuthUsers):
			u := &authpb.User{}
			if err = proto.Unmarshal(v, u); err == nil {
				u.Password = nil
				a.Users = append(a.Users, u)
			}
		case bytes.Equal(bucket, etcdfmt.BucketAuthRoles):
			r := &authpb.Role{}
			if err = proto.Unmarshal(v, r); err == nil {
				a.Roles = append(a.Roles, r)
			}
		}
		if err != nil {
			return fmt.Errorf("%w: %s %q: %w", etcdfmt.ErrSchema, bucket, k, err)
		}
		return nil
	}
	if _, _, err := scan(ctx, o, visit); err != nil {
		return nil, err
	}
	return a, nil
}
