package rollingdefrag

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"sort"
	"strconv"
	"strings"

	"github.com/etcdkit/etcdkit/cluster"
)

// ErrRule reports a --rule expression that does not parse or evaluate.
var ErrRule = errors.New("bad defrag rule")

// Rule decides per member whether to defragment it: an expression such as
// `dbSizeFree > 256*1024*1024 || dbQuotaUsage > 0.8` over the member's
// sizes, with numbers, + - * / ( ), comparisons, && || and !. It is parsed
// with Go's own expression parser.
type Rule struct {
	src  string
	expr ast.Expr
}

// RuleVars are the names a rule may use.
var RuleVars = []string{"dbSize", "dbSizeInUse", "dbSizeFree", "dbQuota", "dbQuotaUsage"}

// ParseRule parses a rule; "" is a rule that always holds. A rule must be a
// condition: an expression whose result is a number is refused here, so a
// configuration with one fails at start, not at every run.
func ParseRule(src string) (*Rule, error) {
	if strings.TrimSpace(src) == "" {
		return &Rule{}, nil
	}
	e, err := parser.ParseExpr(src)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrRule, src, err)
	}
	r := &Rule{src: src, expr: e}
	vars := map[string]float64{}
	for _, v := range RuleVars {
		vars[v] = 1
	}
	v, err := r.eval(e, vars)
	if err != nil {
		return nil, err
	}
	if !v.isBool {
		return nil, r.notCondition()
	}
	return r, nil
}

// String is the rule's source.
func (r *Rule) String() string { return r.src }

// memberVars are a member's values for a rule.
func memberVars(s cluster.MemberStatus) map[string]float64 {
	v := map[string]float64{
		"dbSize": float64(s.DBSize), "dbSizeInUse": float64(s.DBSizeInUse),
		"dbSizeFree": float64(s.DBSize - s.DBSizeInUse), "dbQuota": float64(s.DBQuota), "dbQuotaUsage": 0,
	}
	if s.DBQuota > 0 {
		v["dbQuotaUsage"] = float64(s.DBSize) / float64(s.DBQuota)
	}
	return v
}

// formatVars prints a member's rule values for logs and reasons.
func formatVars(v map[string]float64) string {
	var parts []string
	for k, x := range v {
		parts = append(parts, fmt.Sprintf("%s=%s", k, strconv.FormatFloat(x, 'g', 6, 64)))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// Eval evaluates the rule for one member's values.
func (r *Rule) Eval(vars map[string]float64) (bool, error) {
	if r.expr == nil {
		return true, nil
	}
	v, err := r.eval(r.expr, vars)
	if err != nil {
		return false, err
	}
	if !v.isBool {
		return false, r.notCondition()
	}
	return v.b, nil
}

// notCondition is the error for a rule whose result is a number: a rule
// must say true or false, e.g. `dbSizeFree > 64*1024*1024`.
func (r *Rule) notCondition() error {
	return fmt.Errorf("%w %q: the result is a number, not true or false (compare it, e.g. %s > 64*1024*1024)", ErrRule, r.src, r.src)
}

type value struct {
	n      float64
	b      bool
	isBool bool
}

func (r *Rule) eval(e ast.Expr, vars map[string]float64) (value, error) {
	bad := func(format string, args ...any) (value, error) {
		return value{}, fmt.Errorf("%w %q: %s", ErrRule, r.src, fmt.Sprintf(format, args...))
	}
	switch e := e.(type) {
	case *ast.ParenExpr:
		return r.eval(e.X, vars)
	case *ast.BasicLit:
		if e.Kind != token.INT && e.Kind != token.FLOAT {
			return bad("%s is not a number", e.Value)
		}
		n, err := strconv.ParseFloat(e.Value, 64)
		if err != nil {
			return bad("%s: %v", e.Value, err)
		}
		return value{n: n}, nil
	case *ast.Ident:
		switch e.Name {
		case "true", "false":
			return value{b: e.Name == "true", isBool: true}, nil
		}
		n, ok := vars[e.Name]
		if !ok {
			return bad("unknown name %s (use %s)", e.Name, strings.Join(RuleVars, ", "))
		}
		return value{n: n}, nil
	case *ast.UnaryExpr:
		x, err := r.eval(e.X, vars)
		if err != nil {
			return x, err
		}
		switch {
		case e.Op == token.NOT && x.isBool:
			return value{b: !x.b, isBool: true}, nil
		case e.Op == token.SUB && !x.isBool:
			return value{n: -x.n}, nil
		}
		return bad("operator %s does not apply there", e.Op)
	case *ast.BinaryExpr:
		x, err := r.eval(e.X, vars)
		if err != nil {
			return x, err
		}
		y, err := r.eval(e.Y, vars)
		if err != nil {
			return y, err
		}
		if x.isBool && y.isBool {
			switch e.Op {
			case token.LAND:
				return value{b: x.b && y.b, isBool: true}, nil
			case token.LOR:
				return value{b: x.b || y.b, isBool: true}, nil
			}
			return bad("operator %s does not apply to true/false", e.Op)
		}
		if x.isBool || y.isBool {
			return bad("operator %s mixes a number and true/false", e.Op)
		}
		switch e.Op {
		case token.ADD:
			return value{n: x.n + y.n}, nil
		case token.SUB:
			return value{n: x.n - y.n}, nil
		case token.MUL:
			return value{n: x.n * y.n}, nil
		case token.QUO:
			if y.n == 0 {
				return value{n: 0}, nil
			}
			return value{n: x.n / y.n}, nil
		case token.GTR:
			return value{b: x.n > y.n, isBool: true}, nil
		case token.GEQ:
			return value{b: x.n >= y.n, isBool: true}, nil
		case token.LSS:
			return value{b: x.n < y.n, isBool: true}, nil
		case token.LEQ:
			return value{b: x.n <= y.n, isBool: true}, nil
		case token.EQL:
			return value{b: x.n == y.n, isBool: true}, nil
		case token.NEQ:
			return value{b: x.n != y.n, isBool: true}, nil
		}
		return bad("operator %s is not supported", e.Op)
	}
	return bad("unsupported expression %T", e)
}
