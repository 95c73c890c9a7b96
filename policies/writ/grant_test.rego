# METADATA
# title: Tests of the default grant policy
# description: |
#   Table-driven: each table maps a case name to an input (a patch over _base_input) and
#   the decision fields it must produce. A failing table prints the failing cases.
package writ.grant_test

import data.writ.grant

# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------

_payments := {
	"id": "payments",
	"name": "Payments",
	"operations": {
		"payouts.create": {
			"method": "POST", "path": "/v1/payouts", "risk": "write",
			"constraints": {
				"destination": {"in": "body", "field": "destination", "op": "eq"},
				"amount_max": {"in": "body", "field": "amount", "op": "lte"},
				"currency": {"in": "body", "field": "currency", "op": "eq"},
				"memo": {"in": "body", "field": "memo", "op": "eq"},
			},
		},
		"payouts.get": {"method": "GET", "path": "/v1/payouts/{id}", "risk": "read", "constraints": {}},
		"payouts.list": {
			"method": "GET", "path": "/v1/payouts", "risk": "read",
			"constraints": {
				"currencies": {"in": "query", "field": "currency", "op": "in"},
				"amount_min": {"in": "query", "field": "amount_gte", "op": "gte"},
				"status": {"in": "query", "field": "status", "op": "regex"},
			},
		},
		"payouts.refund": {"method": "POST", "path": "/v1/payouts/{id}/refund", "risk": "write", "constraints": {}},
	},
}

_code := {
	"id": "code",
	"name": "Code hosting",
	"operations": {"repo.issues.list": {
		"method": "GET", "path": "/repos/{owner}/{repo}/issues", "risk": "read",
		"constraints": {"repo": {"in": "path", "field": "repo", "op": "eq"}},
	}},
}

_base_input := {
	"request": {
		"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
		"authorization_details": [_create_detail],
		"resource": "http://localhost:4001/connectors/payments",
		"dpop_jkt": null,
	},
	"agent": {"id": "agent-1", "name": "Invoice bot", "status": "active"},
	"task": {
		"id": "task-1",
		"agent_id": "agent-1",
		"orchestrator_id": "orch-1",
		"purpose": "pay invoice INV-42 to Acme",
		"status": "active",
		"allowed": [
			{
				"type": "connector", "connector": "payments", "actions": ["payouts.create", "payouts.refund"],
				"constraints": {"destination": "acct_1", "amount_max": 50000, "currency": "usd"},
			},
			{
				"type": "connector", "connector": "payments", "actions": ["payouts.list"],
				"constraints": {"currencies": ["usd", "eur"], "amount_min": 100},
			},
			{"type": "connector", "connector": "payments", "actions": ["payouts.get"]},
			{
				"type": "connector", "connector": "payments", "actions": ["payouts.create"],
				"constraints": {"destination": "acct_9", "amount_max": 10, "currency": "eur"},
			},
		],
		"created_at": "2026-11-28T10:00:00Z",
		"expires_at": "2026-11-28T10:15:00Z",
		"seconds_remaining": 840,
		"on_behalf_of": null,
		"metadata": {},
		"history": {"grants_issued": 1, "refusals": 0, "out_of_purpose_requests": 0},
	},
	"connectors": {"payments": _payments, "code": _code},
	"time": {"now": "2026-11-28T10:01:00Z", "now_unix": 1795860060, "weekday": "Sat", "hour_utc": 10},
}

_create_detail := {
	"type": "connector", "connector": "payments", "actions": ["payouts.create"],
	"constraints": {"destination": "acct_1", "amount_max": 50000, "currency": "usd"},
}

_list_detail := {
	"type": "connector", "connector": "payments", "actions": ["payouts.list"],
	"constraints": {"currencies": ["usd"], "amount_min": 100},
}

# The base input with one requested authorization_details entry.
_with_detail(detail) := object.union(_base_input, {"request": {"authorization_details": [detail]}})

# The base input asking for payouts.create with these constraints.
_create(constraints) := _with_detail(object.union(_create_detail, {"constraints": constraints}))

# The base input asking for payouts.create with these constraints replacing the defaults.
_create_exact(constraints) := _with_detail({
	"type": "connector", "connector": "payments", "actions": ["payouts.create"],
	"constraints": constraints,
})

_list(constraints) := _with_detail(object.union(_list_detail, {"constraints": constraints}))

_list_exact(constraints) := _with_detail({
	"type": "connector", "connector": "payments", "actions": ["payouts.list"],
	"constraints": constraints,
})

_patch(patch) := object.union(_base_input, patch)

_config(patch) := object.union(data.writ.config, patch)

# Fields of the decision that differ from `want` (only the fields `want` names).
_mismatches(got, want) := object.union(
	{field: {"want": value, "got": object.get(got, field, "<absent>")} |
		some field, value in want
		field != "reason"
		object.get(got, field, "<absent>") != value
	},
	{"reason": {"want": want.reason, "got": object.get(got, "reasons", [])} |
		want.reason
		not want.reason in object.get(got, "reasons", [])
	},
)

# Succeeds when no case failed; otherwise prints them and fails.
_report(failures) if count(failures) == 0

_report(failures) if {
	count(failures) > 0
	print("failing cases:", failures)
	false
}

_decision_keys := {"allow", "reasons", "max_ttl_seconds", "max_uses", "requires_approval", "quarantine", "out_of_purpose"}

# ---------------------------------------------------------------------------------------
# Allowed requests
# ---------------------------------------------------------------------------------------

_allowed := "the request is within the task's declared purpose"

_allow_cases := {
	"write, exactly the declared constraints": {
		"input": _base_input,
		"want": {"max_ttl_seconds": 120, "max_uses": 1},
	},
	"write, a lower amount (lte)": {
		"input": _create({"amount_max": 100}),
		"want": {"max_ttl_seconds": 120, "max_uses": 1},
	},
	"write, the amount equal to the declared float": {
		"input": _create({"amount_max": 50000.0}),
		"want": {"max_ttl_seconds": 120, "max_uses": 1},
	},
	"write, an extra constraint the catalogue defines (narrower)": {
		"input": _create({"memo": "INV-42"}),
		"want": {"max_ttl_seconds": 120, "max_uses": 1},
	},
	"write, covered by the second entry for the same action": {
		"input": _create({"destination": "acct_9", "amount_max": 5, "currency": "eur"}),
		"want": {"max_ttl_seconds": 120, "max_uses": 1},
	},
	"read, no constraints declared": {
		"input": _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.get"]}),
		"want": {"max_ttl_seconds": 300, "max_uses": null},
	},
	"read, constraints null": {
		"input": _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.get"], "constraints": null}),
		"want": {"max_ttl_seconds": 300, "max_uses": null},
	},
	"read, in a subset and gte higher": {
		"input": _list({"currencies": ["eur"], "amount_min": 500}),
		"want": {"max_ttl_seconds": 300, "max_uses": null},
	},
	"read, in an empty subset": {
		"input": _list({"currencies": []}),
		"want": {"max_ttl_seconds": 300, "max_uses": null},
	},
	"TTL capped by the task's remaining time": {
		"input": _patch({"task": {"seconds_remaining": 30}}),
		"want": {"max_ttl_seconds": 30, "max_uses": 1},
	},
	"TTL floored to whole seconds": {
		"input": _patch({"task": {"seconds_remaining": 45.9}}),
		"want": {"max_ttl_seconds": 45, "max_uses": 1},
	},
	"resource absent": {
		"input": _patch({"request": {"resource": null}}),
		"want": {"max_ttl_seconds": 120},
	},
	"DPoP-bound request": {
		"input": _patch({"request": {"dpop_jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}),
		"want": {"max_ttl_seconds": 120},
	},
}

test_allow_table if {
	failures := {name: problems |
		some name, case in _allow_cases
		want := object.union({"allow": true, "reason": _allowed, "requires_approval": false, "quarantine": false, "out_of_purpose": false}, case.want)
		d := grant.decision with input as case.input
		problems := _mismatches(d, want)
		count(problems) > 0
	}
	_report(failures)
}

test_allow_table_has_cases if count(_allow_cases) >= 10

# refund is declared only in an entry whose constraints refund's catalogue does not
# define: they could not be enforced, so it is refused.
test_undefinable_declared_constraint_refuses_refund if {
	d := grant.decision with input as _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.refund"]})
	d.allow == false
	d.out_of_purpose == true
	"constraint amount_max declared by the task cannot be enforced on payouts.refund: the catalogue of connector payments does not define it for that operation" in d.reasons
}

# ---------------------------------------------------------------------------------------
# Refused requests
# ---------------------------------------------------------------------------------------

_deny_cases := {
	# Agent and task state.
	"suspended agent": {
		"input": _patch({"agent": {"status": "suspended"}}),
		"want": {"reason": "agent agent-1 is not active (status suspended)"},
	},
	"agent is not the task's agent": {
		"input": _patch({"agent": {"id": "agent-2"}}),
		"want": {"reason": "the task belongs to agent agent-1, not to agent agent-2"},
	},
	"completed task": {
		"input": _patch({"task": {"status": "completed"}}),
		"want": {"reason": "task task-1 is not active (status completed)"},
	},
	"failed task": {
		"input": _patch({"task": {"status": "failed"}}),
		"want": {"reason": "task task-1 is not active (status failed)"},
	},
	"expired task": {
		"input": _patch({"task": {"status": "expired"}}),
		"want": {"reason": "task task-1 is not active (status expired)"},
	},
	"revoked task": {
		"input": _patch({"task": {"status": "revoked"}}),
		"want": {"reason": "task task-1 is not active (status revoked)"},
	},
	"active task with no time remaining": {
		"input": _patch({"task": {"seconds_remaining": 0}}),
		"want": {"reason": "task task-1 has no time remaining"},
	},
	"active task with negative time remaining": {
		"input": _patch({"task": {"seconds_remaining": -5}}),
		"want": {"reason": "task task-1 has no time remaining"},
	},
	"active task with under a second remaining": {
		"input": _patch({"task": {"seconds_remaining": 0.5}}),
		"want": {"reason": "task task-1 has less than one second remaining"},
	},
	# Shape of the request.
	"no authorization_details": {
		"input": _patch({"request": {"authorization_details": []}}),
		"want": {"reason": "authorization_details must hold exactly one entry (one connector and one action per credential)"},
	},
	"two authorization_details": {
		"input": _patch({"request": {"authorization_details": [_create_detail, _list_detail]}}),
		"want": {"reason": "authorization_details must hold exactly one entry (one connector and one action per credential)"},
	},
	"authorization_details not an array": {
		"input": _patch({"request": {"authorization_details": _create_detail}}),
		"want": {"reason": "authorization_details must hold exactly one entry (one connector and one action per credential)"},
	},
	"entry of another type": {
		"input": _with_detail(object.union(_create_detail, {"type": "payment_initiation"})),
		"want": {"reason": "the authorization_details entry must be of type connector and name a connector"},
	},
	"entry without a connector": {
		"input": _with_detail(object.remove(_create_detail, ["connector"])),
		"want": {"reason": "the authorization_details entry must be of type connector and name a connector"},
	},
	"two actions": {
		"input": _with_detail(object.union(_create_detail, {"actions": ["payouts.create", "payouts.get"]})),
		"want": {"reason": "the authorization_details entry must name exactly one action (one connector and one action per credential)"},
	},
	"no action": {
		"input": _with_detail(object.union(_create_detail, {"actions": []})),
		"want": {"reason": "the authorization_details entry must name exactly one action (one connector and one action per credential)"},
	},
	"actions not an array": {
		"input": _with_detail(object.union(_create_detail, {"actions": "payouts.create"})),
		"want": {"reason": "the authorization_details entry must name exactly one action (one connector and one action per credential)"},
	},
	"constraints not an object": {
		"input": _with_detail(object.union(_create_detail, {"constraints": ["acct_1"]})),
		"want": {"reason": "the constraints of the authorization_details entry must be an object"},
	},
	"resource of another connector": {
		"input": _patch({"request": {"resource": "http://localhost:4001/connectors/code"}}),
		"want": {"reason": "resource http://localhost:4001/connectors/code does not name connector payments"},
	},
	# Catalogue.
	"unknown connector, declared by the task": {
		"input": _patch({"connectors": {"payments": null}}),
		"want": {"reason": "connector payments is not registered"},
	},
	"unknown operation, declared by the task": {
		"input": _patch({"connectors": {"payments": {"operations": {"payouts.create": null}}}}),
		"want": {"reason": "operation payouts.create is not in the catalogue of connector payments"},
	},
	"unsupported operator in the catalogue": {
		"input": _patch({
			"request": {"authorization_details": [object.union(_list_detail, {"constraints": {"status": "paid"}})]},
			"task": {"allowed": [{"type": "connector", "connector": "payments", "actions": ["payouts.list"], "constraints": {"status": "paid"}}]},
		}),
		"want": {"reason": "constraint status of operation payouts.list uses operator regex, which the policy does not support"},
	},
	# Business hours (data.writ.config.connectors[<id>].business_hours_utc) are in their own test.
}

# Out of purpose: outside the task's allowed (counted towards quarantine).
_out_of_purpose_cases := {
	"unknown connector, not in the task": {
		"input": _with_detail({"type": "connector", "connector": "chat", "actions": ["messages.post"]}),
		"want": {"reason": "connector chat is not declared in the task"},
	},
	"registered connector, not in the task": {
		"input": _with_detail({"type": "connector", "connector": "code", "actions": ["repo.issues.list"], "constraints": {"repo": "writ"}}),
		"want": {"reason": "connector code is not declared in the task"},
	},
	"unknown operation, not declared": {
		"input": _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.delete"]}),
		"want": {"reason": "action payouts.delete is not declared for connector payments in the task"},
	},
	"known operation, not declared": {
		"input": _patch({"task": {"allowed": [{"type": "connector", "connector": "payments", "actions": ["payouts.get"]}]}}),
		"want": {"reason": "action payouts.create is not declared for connector payments in the task"},
	},
	"eq: other payee": {
		"input": _create({"destination": "acct_2"}),
		"want": {"reason": "constraint destination acct_2 differs from the declared acct_1 (eq)"},
	},
	"eq: other type": {
		"input": _create({"currency": ["usd"]}),
		"want": {"reason": "constraint currency [usd] differs from the declared usd (eq)"},
	},
	"constraints of two entries mixed": {
		"input": _create({"destination": "acct_9", "currency": "eur"}),
		"want": {"reason": "constraint amount_max 50000 is wider than the declared 10 (lte)"},
	},
	"entry of another type ignored": {
		"input": _patch({"task": {"allowed": [object.union(_create_detail, {"type": "payment_initiation"})]}}),
		"want": {"reason": "connector payments is not declared in the task"},
	},
	"lte: widened amount": {
		"input": _create({"amount_max": 90000}),
		"want": {"reason": "constraint amount_max 90000 is wider than the declared 50000 (lte)"},
	},
	"lte: one above the declared amount": {
		"input": _create({"amount_max": 50001}),
		"want": {"reason": "constraint amount_max 50001 is wider than the declared 50000 (lte)"},
	},
	"lte: amount as a string": {
		"input": _create({"amount_max": "100"}),
		"want": {"reason": "constraint amount_max 100 is wider than the declared 50000 (lte)"},
	},
	"gte: lower minimum": {
		"input": _list({"amount_min": 99}),
		"want": {"reason": "constraint amount_min 99 is wider than the declared 100 (gte)"},
	},
	"gte: minimum as null": {
		"input": _list({"amount_min": null}),
		"want": {"reason": "constraint amount_min null is wider than the declared 100 (gte)"},
	},
	"in: a superset": {
		"input": _list({"currencies": ["usd", "gbp"]}),
		"want": {"reason": "constraint currencies [usd, gbp] is wider than the declared [usd, eur] (in)"},
	},
	"in: a superset of 12 values, the first 10 shown": {
		"input": _list({"currencies": ["usd", "eur", "gbp", "chf", "jpy", "cad", "aud", "nzd", "sek", "nok", "dkk", "pln"]}),
		"want": {"reason": "constraint currencies [usd, eur, gbp, chf, jpy, cad, aud, nzd, sek, nok, ... (12 values)] is wider than the declared [usd, eur] (in)"},
	},
	"in: numbers for strings": {
		"input": _list({"currencies": [1, 2.5]}),
		"want": {"reason": "constraint currencies [1, 2.5] is wider than the declared [usd, eur] (in)"},
	},
	"in: a scalar": {
		"input": _list({"currencies": "usd"}),
		"want": {"reason": "constraint currencies usd is wider than the declared [usd, eur] (in)"},
	},
	"declared constraint missing (eq)": {
		"input": _create_exact({"amount_max": 100, "currency": "usd"}),
		"want": {"reason": "constraint destination is declared by the task but missing from the request"},
	},
	"declared constraint missing (lte)": {
		"input": _create_exact({"destination": "acct_1", "currency": "usd"}),
		"want": {"reason": "constraint amount_max is declared by the task but missing from the request"},
	},
	"declared constraint missing (in)": {
		"input": _list_exact({"amount_min": 100}),
		"want": {"reason": "constraint currencies is declared by the task but missing from the request"},
	},
	"no constraints at all": {
		"input": _create_exact({}),
		"want": {"reason": "constraint amount_max is declared by the task but missing from the request"},
	},
	"constraint unknown to the catalogue": {
		"input": _create({"fee_payer": "acme"}),
		"want": {"reason": "constraint fee_payer is not defined by operation payouts.create of connector payments"},
	},
	"constraint on an operation that defines none": {
		"input": _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.get"], "constraints": {"id": "po_1"}}),
		"want": {"reason": "constraint id is not defined by operation payouts.get of connector payments"},
	},
	"declared constraint the operation cannot enforce": {
		"input": _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.refund"], "constraints": {}}),
		"want": {"reason": "constraint destination declared by the task cannot be enforced on payouts.refund: the catalogue of connector payments does not define it for that operation"},
	},
	"malformed constraints in the task's entry": {
		"input": _patch({"task": {"allowed": [{"type": "connector", "connector": "payments", "actions": ["payouts.create"], "constraints": ["acct_1"]}]}}),
		"want": {"reason": "the task's allowed entry for this connector has malformed constraints"},
	},
}

test_deny_table if {
	failures := {name: problems |
		some name, case in _deny_cases
		want := object.union(_deny_defaults, case.want)
		d := grant.decision with input as case.input
		problems := _mismatches(d, want)
		count(problems) > 0
	}
	_report(failures)
}

test_out_of_purpose_table if {
	failures := {name: problems |
		some name, case in _out_of_purpose_cases
		want := object.union(object.union(_deny_defaults, {"out_of_purpose": true}), case.want)
		d := grant.decision with input as case.input
		problems := _mismatches(d, want)
		count(problems) > 0
	}
	_report(failures)
}

_deny_defaults := {
	"allow": false,
	"max_ttl_seconds": 0,
	"max_uses": 0,
	"requires_approval": false,
	"quarantine": false,
	"out_of_purpose": false,
}

test_tables_have_cases if {
	count(_deny_cases) >= 20
	count(_out_of_purpose_cases) >= 20
}

# Every case of every table yields an object with exactly the decision's keys.
test_decision_always_has_every_field if {
	tables := [_allow_cases, _deny_cases, _out_of_purpose_cases]
	every i in [c.input | some table in tables; some c in table] {
		d := grant.decision with input as i
		{k | some k, _ in d} == _decision_keys
		count(d.reasons) > 0
	}
}

# A refusal for one reason keeps the others: two problems, two reasons.
test_reasons_accumulate if {
	d := grant.decision with input as _patch({"agent": {"status": "suspended"}, "task": {"status": "revoked"}})
	d.allow == false
	"agent agent-1 is not active (status suspended)" in d.reasons
	"task task-1 is not active (status revoked)" in d.reasons
}

# ---------------------------------------------------------------------------------------
# Empty and malformed input
# ---------------------------------------------------------------------------------------

test_empty_input_is_denied if {
	d := grant.decision with input as {}
	d.allow == false
	{k | some k, _ in d} == _decision_keys
	d.reasons == [
		"authorization_details must hold exactly one entry (one connector and one action per credential)",
		"the input names no agent",
		"the input names no task",
	]
}

test_no_input_is_denied if {
	grant.decision.allow == false
}

test_scalar_inputs_are_denied if {
	every i in ["x", 42, null, true, [_base_input]] {
		d := grant.decision with input as i
		d.allow == false
		count(d.reasons) > 0
	}
}

test_missing_sections_are_denied if {
	every section in ["request", "agent", "task", "connectors"] {
		d := grant.decision with input as object.remove(_base_input, [section])
		d.allow == false
	}
}

# ---------------------------------------------------------------------------------------
# TTL and uses from data.writ.config
# ---------------------------------------------------------------------------------------

_read_input := _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.get"]})

_cap_cases := {
	"write default": {"input": _base_input, "config": {}, "ttl": 120, "uses": 1},
	"read default": {"input": _read_input, "config": {}, "ttl": 300, "uses": null},
	"write from data": {"input": _base_input, "config": {"ttl_seconds": {"write": 60}}, "ttl": 60, "uses": 1},
	"read from data": {"input": _read_input, "config": {"ttl_seconds": {"read": 90}}, "ttl": 90, "uses": null},
	"connector cap smaller wins": {"input": _base_input, "config": {"connectors": {"payments": {"max_ttl_seconds": 30}}}, "ttl": 30, "uses": 1},
	"connector cap larger loses": {"input": _read_input, "config": {"connectors": {"payments": {"max_ttl_seconds": 3600}}}, "ttl": 300, "uses": null},
	"other connector's cap ignored": {"input": _base_input, "config": {"connectors": {"code": {"max_ttl_seconds": 5}}}, "ttl": 120, "uses": 1},
	"task remaining below every cap": {"input": _patch({"task": {"seconds_remaining": 7}}), "config": {"connectors": {"payments": {"max_ttl_seconds": 30}}}, "ttl": 7, "uses": 1},
	"invalid TTL in data falls back to the default": {"input": _base_input, "config": {"ttl_seconds": {"write": "forever"}}, "ttl": 120, "uses": 1},
	"zero TTL in data falls back to the default": {"input": _base_input, "config": {"ttl_seconds": {"write": 0}}, "ttl": 120, "uses": 1},
	"read uses from data": {"input": _read_input, "config": {"read_max_uses": 5}, "ttl": 300, "uses": 5},
	"read uses never apply to writes": {"input": _base_input, "config": {"read_max_uses": 5}, "ttl": 120, "uses": 1},
	"invalid read uses count as one": {"input": _read_input, "config": {"read_max_uses": 0}, "ttl": 300, "uses": 1},
	"fractional read uses count as one": {"input": _read_input, "config": {"read_max_uses": 2.5}, "ttl": 300, "uses": 1},
	"unknown risk is a write": {"input": _patch({"connectors": {"payments": {"operations": {"payouts.create": {"risk": "admin"}}}}}), "config": {}, "ttl": 120, "uses": 1},
}

test_cap_table if {
	failures := {name: problems |
		some name, case in _cap_cases
		d := grant.decision with input as case.input with data.writ.config as _config(case.config)
		problems := _mismatches(d, {"allow": true, "max_ttl_seconds": case.ttl, "max_uses": case.uses})
		count(problems) > 0
	}
	_report(failures)
}

# Without any data document the built-in defaults apply (a bare .wasm has no data.json).
test_defaults_without_data if {
	d := grant.decision with input as _base_input with data.writ.config as null
	d.allow == true
	d.max_ttl_seconds == 120
	d.max_uses == 1
}

# ---------------------------------------------------------------------------------------
# Quarantine: the nth out-of-purpose request, n = data.writ.config.quarantine_after
# ---------------------------------------------------------------------------------------

_history(n) := {"task": {"history": {"grants_issued": 1, "refusals": n, "out_of_purpose_requests": n}}}

_widened := {"request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 90000}})]}}

_quarantine_cases := {
	"first out-of-purpose request": {"patch": object.union(_widened, _history(0)), "config": {}, "quarantine": false, "out_of_purpose": true},
	"second out-of-purpose request": {"patch": object.union(_widened, _history(1)), "config": {}, "quarantine": false, "out_of_purpose": true},
	"third out-of-purpose request": {"patch": object.union(_widened, _history(2)), "config": {}, "quarantine": true, "out_of_purpose": true},
	"later out-of-purpose request": {"patch": object.union(_widened, _history(9)), "config": {}, "quarantine": true, "out_of_purpose": true},
	"threshold 1 from data": {"patch": object.union(_widened, _history(0)), "config": {"quarantine_after": 1}, "quarantine": true, "out_of_purpose": true},
	"threshold 5 from data": {"patch": object.union(_widened, _history(3)), "config": {"quarantine_after": 5}, "quarantine": false, "out_of_purpose": true},
	"invalid threshold means 3": {"patch": object.union(_widened, _history(2)), "config": {"quarantine_after": 0}, "quarantine": true, "out_of_purpose": true},
	"in-purpose refusal never quarantines": {"patch": object.union({"agent": {"status": "suspended"}}, _history(9)), "config": {}, "quarantine": false, "out_of_purpose": false},
	"malformed request never quarantines": {"patch": object.union({"request": {"authorization_details": []}}, _history(9)), "config": {}, "quarantine": false, "out_of_purpose": false},
	"allowed request never quarantines": {"patch": _history(9), "config": {}, "quarantine": false, "out_of_purpose": false},
}

test_quarantine_table if {
	failures := {name: problems |
		some name, case in _quarantine_cases
		d := grant.decision with input as _patch(case.patch) with data.writ.config as _config(case.config)
		problems := _mismatches(d, {"quarantine": case.quarantine, "out_of_purpose": case.out_of_purpose})
		count(problems) > 0
	}
	_report(failures)
}

test_quarantine_reason if {
	d := grant.decision with input as _patch(object.union(_widened, _history(2)))
	d.allow == false
	"quarantine: this is out-of-purpose request 3 for the task (threshold 3)" in d.reasons
	"constraint amount_max 90000 is wider than the declared 50000 (lte)" in d.reasons
}

# ---------------------------------------------------------------------------------------
# Approval thresholds (opt-in through data.writ.config.approval)
# ---------------------------------------------------------------------------------------

_approval := {"approval": {"payments": {"constraint": "amount_max", "above": 100000}}}

_big_task := {"task": {"allowed": [{
	"type": "connector", "connector": "payments", "actions": ["payouts.create", "payouts.get"],
	"constraints": {"destination": "acct_1", "amount_max": 500000, "currency": "usd"},
}]}}

_approval_cases := {
	"above the threshold": {
		"input": _patch(object.union(_big_task, {"request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 150000}})]}})),
		"config": _approval,
		"want": {"allow": false, "requires_approval": true, "max_ttl_seconds": 120, "max_uses": 1, "reason": "approval required: constraint amount_max 150000 is above the approval threshold 100000"},
	},
	"one above the threshold": {
		"input": _patch(object.union(_big_task, {"request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 100001}})]}})),
		"config": _approval,
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: constraint amount_max 100001 is above the approval threshold 100000"},
	},
	"at the threshold": {
		"input": _patch(object.union(_big_task, {"request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 100000}})]}})),
		"config": _approval,
		"want": {"allow": true, "requires_approval": false},
	},
	"below the threshold": {
		"input": _patch(_big_task),
		"config": _approval,
		"want": {"allow": true, "requires_approval": false},
	},
	"operation without that constraint": {
		"input": _with_detail({"type": "connector", "connector": "payments", "actions": ["payouts.get"]}),
		"config": _approval,
		"want": {"allow": true, "requires_approval": false},
	},
	"constraint not requested nor declared": {
		"input": _patch({
			"task": {"allowed": [{"type": "connector", "connector": "payments", "actions": ["payouts.create"]}]},
			"request": {"authorization_details": [{"type": "connector", "connector": "payments", "actions": ["payouts.create"]}]},
		}),
		"config": _approval,
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: constraint amount_max is not set, so it cannot be held under the approval threshold 100000"},
	},
	"other connector's threshold": {
		"input": _patch(_big_task),
		"config": {"approval": {"code": {"constraint": "amount_max", "above": 1}}},
		"want": {"allow": true, "requires_approval": false},
	},
	"rule limited to other actions": {
		"input": _patch(object.union(_big_task, {"request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 150000}})]}})),
		"config": {"approval": {"payments": {"constraint": "amount_max", "above": 100000, "actions": ["payouts.refund"]}}},
		"want": {"allow": true, "requires_approval": false},
	},
	"a list of rules, one matches": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": [
			{"constraint": "amount_max", "above": 100000},
			{"constraint": "amount_max", "above": 10, "actions": ["payouts.create"]},
		]}},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: constraint amount_max 50000 is above the approval threshold 10"},
	},
	"malformed rule requires approval": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": {"constraint": "amount_max", "above": "lots"}}},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: an approval rule for connector payments is malformed"},
	},
	"rule whose actions is not a list requires approval": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": {"constraint": "amount_max", "above": 10, "actions": "payouts.create"}}},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: an approval rule for connector payments is malformed"},
	},
	"rule whose actions are not strings requires approval": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": {"constraint": "amount_max", "above": 10, "actions": [["payouts.create"]]}}},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: an approval rule for connector payments is malformed"},
	},
	"rule whose actions is null requires approval": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": {"constraint": "amount_max", "above": 10, "actions": null}}},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: an approval rule for connector payments is malformed"},
	},
	"rule that is neither an object nor a list requires approval": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": "amount_max above 10"}},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: an approval rule for connector payments is malformed"},
	},
	"approval that is a list, not an object by connector, requires approval": {
		"input": _patch(_big_task),
		"config": {"approval": [{"constraint": "amount_max", "above": 100000}]},
		"want": {"allow": false, "requires_approval": true, "reason": "approval required: an approval rule for connector payments is malformed"},
	},
	"a null rule is no rule": {
		"input": _patch(_big_task),
		"config": {"approval": {"payments": null}},
		"want": {"allow": true, "requires_approval": false},
	},
	"no approval for a request refused anyway": {
		"input": _patch(object.union(_big_task, {"agent": {"status": "suspended"}, "request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 150000}})]}})),
		"config": _approval,
		"want": {"allow": false, "requires_approval": false, "max_ttl_seconds": 0, "reason": "agent agent-1 is not active (status suspended)"},
	},
}

test_approval_table if {
	failures := {name: problems |
		some name, case in _approval_cases
		d := grant.decision with input as case.input with data.writ.config as _config(case.config)
		problems := _mismatches(d, case.want)
		count(problems) > 0
	}
	_report(failures)
}

test_shipped_data_sets_no_approval if {
	data.writ.config.approval == {}
	d := grant.decision with input as _patch(object.union(_big_task, {"request": {"authorization_details": [object.union(_create_detail, {"constraints": {"amount_max": 499999}})]}}))
	d.allow == true
	d.requires_approval == false
}

test_shipped_data_defaults if {
	data.writ.config.ttl_seconds == {"write": 120, "read": 300}
	data.writ.config.quarantine_after == 3
	data.writ.config.read_max_uses == null
}

# ---------------------------------------------------------------------------------------
# Business hours (opt-in through data.writ.config.connectors[<id>].business_hours_utc)
# ---------------------------------------------------------------------------------------

_hours_cases := {
	"inside": {"hours": [9, 17], "hour": 10, "allow": true},
	"at the start": {"hours": [9, 17], "hour": 9, "allow": true},
	"at the end": {"hours": [9, 17], "hour": 17, "allow": false},
	"before": {"hours": [9, 17], "hour": 3, "allow": false},
	"overnight, late": {"hours": [22, 6], "hour": 23, "allow": true},
	"overnight, early": {"hours": [22, 6], "hour": 2, "allow": true},
	"overnight, day": {"hours": [22, 6], "hour": 12, "allow": false},
	"malformed": {"hours": ["9", 17], "hour": 10, "allow": false},
	"a single number": {"hours": 9, "hour": 10, "allow": false},
	"null means no restriction": {"hours": null, "hour": 3, "allow": true},
}

test_business_hours_table if {
	failures := {name: problems |
		some name, case in _hours_cases
		d := grant.decision with input as _patch({"time": {"hour_utc": case.hour}})
			with data.writ.config as _config({"connectors": {"payments": {"business_hours_utc": case.hours}}})
		problems := _mismatches(d, {"allow": case.allow, "out_of_purpose": false})
		count(problems) > 0
	}
	_report(failures)
}

test_business_hours_reason if {
	d := grant.decision with input as _patch({"time": {"hour_utc": 20}})
		with data.writ.config as _config({"connectors": {"payments": {"business_hours_utc": [9, 17]}}})
	"connector payments only issues credentials during the business hours [9, 17] UTC (hour now: 20)" in d.reasons
}
