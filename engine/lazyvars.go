package engine

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
	apiservercel "k8s.io/apiserver/pkg/cel"
)

// lazyVariables is the variables object of one policy for one request, as
// k8s.io/apiserver/pkg/cel/lazy.MapValue, which it replaces, behaves: each
// variable is evaluated on first use and at most once. Unlike MapValue it
// makes no closure per variable and no map per request, and it unescapes a
// field name (a regular expression replacement, an allocation per access)
// only when the name may hold an escape.
type lazyVariables struct {
	p    *policyEnv
	ix   *variablesIndex
	ctx  context.Context
	ev   *evaluation
	act  interpreter.Activation
	vals []ref.Val // by index in p.variables; nil until evaluated
}

// variablesIndex is what every request's lazyVariables of one policy
// shares, made on first use.
type variablesIndex struct {
	typ *types.Type
	// byName is the index in variables of each name: the last, when a
	// name is given twice, as MapValue's callbacks.
	byName map[string]int
}

func (p *policyEnv) variablesIndex() *variablesIndex {
	p.varsOnce.Do(func() {
		ix := &variablesIndex{
			typ:    types.NewTypeValue(p.varsType.CelType().TypeName(), traits.IndexerType|traits.FieldTesterType|traits.IterableType),
			byName: make(map[string]int, len(p.variables)),
		}
		for i, v := range p.variables {
			ix.byName[v.name] = i
		}
		p.varsIx = ix
	})
	return p.varsIx
}

var (
	_ ref.Val       = (*lazyVariables)(nil)
	_ traits.Mapper = (*lazyVariables)(nil)
)

func (m *lazyVariables) resolve(i int) ref.Val {
	if v := m.vals[i]; v != nil {
		return v
	}
	v := m.p.variables[i]
	val, err := m.ev.evalCharged(m.ctx, m.act, v, &m.ev.budget)
	if err != nil {
		val = types.NewErr("variable %q: %v", v.name, err)
	}
	m.vals[i] = val
	return val
}

func (m *lazyVariables) Find(key ref.Val) (ref.Val, bool) {
	n, ok := key.(types.String)
	if !ok {
		return types.MaybeNoSuchOverloadErr(n), true
	}
	return m.find(string(n))
}

// find is Find of a field name.
func (m *lazyVariables) find(name string) (ref.Val, bool) {
	if strings.Contains(name, "__") {
		var ok bool
		if name, ok = apiservercel.Unescape(name); !ok {
			return nil, false
		}
	}
	i, exists := m.ix.byName[name]
	if !exists {
		return nil, false
	}
	return m.resolve(i), true
}

func (m *lazyVariables) Get(key ref.Val) ref.Val {
	if v, found := m.Find(key); found {
		return v
	}
	return types.ValOrErr(key, "no such key: %v", key)
}

func (m *lazyVariables) Contains(key ref.Val) ref.Val {
	v, found := m.Find(key)
	if v != nil && types.IsUnknownOrError(v) {
		return v
	}
	return types.Bool(found)
}

func (m *lazyVariables) Size() ref.Val { return types.Int(len(m.ix.byName)) }

func (m *lazyVariables) Iterator() traits.Iterator { return &lazyVariablesIterator{parent: m} }

func (m *lazyVariables) ConvertToNative(typeDesc reflect.Type) (any, error) {
	return nil, fmt.Errorf("disallowed conversion from %q to %q", m.ix.typ.TypeName(), typeDesc.Name())
}

func (m *lazyVariables) ConvertToType(typeVal ref.Type) ref.Val {
	switch typeVal {
	case m.ix.typ:
		return m
	case types.TypeType:
		return m.ix.typ
	}
	return types.NewErr("disallowed conversion from %q to %q", m.ix.typ.TypeName(), typeVal.TypeName())
}

func (m *lazyVariables) Equal(other ref.Val) ref.Val {
	o, ok := other.(*lazyVariables)
	if !ok {
		return types.MaybeNoSuchOverloadErr(other)
	}
	return types.Bool(m == o)
}

func (m *lazyVariables) Type() ref.Type { return m.ix.typ }

func (m *lazyVariables) Value() any { return types.NoSuchOverloadErr() }

// lazyVariablesIterator iterates over the variables' values, in the order
// of their declaration, as MapValue's iterator.
type lazyVariablesIterator struct {
	parent *lazyVariables
	index  int
}

var _ traits.Iterator = (*lazyVariablesIterator)(nil)

func (i *lazyVariablesIterator) ConvertToNative(typeDesc reflect.Type) (any, error) {
	return nil, fmt.Errorf("disallowed conversion to %q", typeDesc.Name())
}

func (i *lazyVariablesIterator) ConvertToType(typeValue ref.Type) ref.Val {
	return types.NewErr("disallowed conversion o %q", typeValue.TypeName())
}

func (i *lazyVariablesIterator) Equal(other ref.Val) ref.Val {
	o, ok := other.(*lazyVariablesIterator)
	if !ok {
		return types.MaybeNoSuchOverloadErr(other)
	}
	return types.Bool(o == i)
}

func (i *lazyVariablesIterator) Type() ref.Type { return types.IteratorType }

func (i *lazyVariablesIterator) Value() any { return nil }

func (i *lazyVariablesIterator) HasNext() ref.Val {
	return types.Bool(i.index < len(i.parent.p.variables))
}

func (i *lazyVariablesIterator) Next() ref.Val {
	ret := i.parent.Get(types.String(i.parent.p.variables[i.index].name))
	i.index++
	return ret
}
