package engine

import (
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apiserver/pkg/cel/common"
)

// requestValue is the CEL variable request. request.operation, which most
// conditions read, is answered from the request; anything else from the
// API server's reflective value of it, made on first need: a copy of the
// request and reflection cost a microsecond per request.
type requestValue struct {
	req  *admissionv1.AdmissionRequest
	full traits.Mapper
}

var _ traits.Mapper = (*requestValue)(nil)

const operationField = types.String("operation")

func (r *requestValue) value() traits.Mapper {
	if r.full == nil {
		c := *r.req
		c.Object, c.OldObject = emptyRaw, emptyRaw
		r.full = common.SchemalessTypedToVal(&c).(traits.Mapper)
	}
	return r.full
}

func (r *requestValue) Find(key ref.Val) (ref.Val, bool) {
	if key == operationField {
		return types.String(r.req.Operation), true
	}
	return r.value().Find(key)
}

func (r *requestValue) Get(key ref.Val) ref.Val {
	if key == operationField {
		return types.String(r.req.Operation)
	}
	return r.value().Get(key)
}

func (r *requestValue) Contains(key ref.Val) ref.Val {
	if key == operationField {
		return types.True
	}
	return r.value().Contains(key)
}

func (r *requestValue) IsSet(field ref.Val) ref.Val {
	if field == operationField {
		return types.True
	}
	if s, ok := r.value().(interface{ IsSet(ref.Val) ref.Val }); ok {
		return s.IsSet(field)
	}
	return r.value().Contains(field)
}

func (r *requestValue) ConvertToNative(t reflect.Type) (any, error) {
	return r.value().ConvertToNative(t)
}
func (r *requestValue) ConvertToType(t ref.Type) ref.Val {
	if t == types.MapType {
		return r
	}
	return r.value().ConvertToType(t)
}
func (r *requestValue) Equal(other ref.Val) ref.Val {
	if o, ok := other.(*requestValue); ok {
		other = o.value()
	}
	return r.value().Equal(other)
}
func (r *requestValue) Type() ref.Type            { return types.MapType }
func (r *requestValue) Value() any                { return r.value().Value() }
func (r *requestValue) Iterator() traits.Iterator { return r.value().Iterator() }
func (r *requestValue) Size() ref.Val             { return r.value().Size() }
