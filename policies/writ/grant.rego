# METADATA
# title: Writ default grant policy
# description: |
#   Decides whether an agent may get a short-lived credential for one operation of one
#   connector, inside the purpose its task declared. Compiled to WebAssembly with the
#   entrypoint writ/grant/decision and evaluated in-process by the authorization server.
#   The input document, the decision and data.writ.config are described in
#   docs/policies.md. Anything the policy cannot prove allowed is refused.
# related_resources:
#   - description: Policy authoring guide
#     ref: docs/policies.md
package writ.grant

# METADATA
# title: Decision
# description: |
#   The entrypoint. Always an object: {allow, reasons, max_ttl_seconds, max_uses,
#   requires_approval, quarantine, out_of_purpose}. The default covers an input so
#   malformed that the rule below cannot be built.
# entrypoint: true
default decision := {
	"allow": false,
	"reasons": ["the policy could not evaluate the request"],
	"max_ttl_seconds": 0,
	"max_uses": 0,
	"requires_approval": false,
	"quarantine": false,
	"out_of_purpose": false,
}

decision := {
	"allow": _allow,
	"reasons": _reasons,
	"max_ttl_seconds": _max_ttl_seconds,
	"max_uses": _max_uses,
	"requires_approval": _requires_approval,
	"quarantine": _quarantine,
	"out_of_purpose": _out_of_purpose,
}

# ---------------------------------------------------------------------------------------
# Configuration: data.writ.config over built-in defaults (the shipped data.json repeats
# them so that they are visible; a key set in data wins).
# ---------------------------------------------------------------------------------------

_default_config := {
	"ttl_seconds": {"read": 300, "write": 120},
	"read_max_uses": null,
	"quarantine_after": 3,
	"approval": {},
	"connectors": {},
}

default _data_config := {}

_data_config := c if {
	c := data.writ.config
	is_object(c)
}

_config := object.union(_default_config, _data_config)

# ---------------------------------------------------------------------------------------
# The request: exactly one authorization_details entry, of type connector, one action.
# ---------------------------------------------------------------------------------------

_details := input.request.authorization_details

_single_detail if {
	is_array(_details)
	count(_details) == 1
}

_detail := _details[0] if _single_detail

_connector_id := _detail.connector if {
	_detail.type == "connector"
	is_string(_detail.connector)
}

_single_action if {
	is_array(_detail.actions)
	count(_detail.actions) == 1
	is_string(_detail.actions[0])
}

_action := _detail.actions[0] if _single_action

# Absent or null constraints mean "none requested".
_req_constraints := c if {
	c := object.get(_detail, "constraints", {})
	is_object(c)
} else := {} if {
	object.get(_detail, "constraints", {}) == null
}

# Negations go through named rules like this one: in `not is_object(x)`, an undefined x
# makes the whole expression undefined (the call's argument is evaluated outside the
# negation), so the `not` would never succeed.
_req_constraints_valid if is_object(_req_constraints)

_well_formed if {
	_connector_id
	_action
	_req_constraints_valid
}

_connector := input.connectors[_connector_id]

_connector_known if is_object(_connector)

_operation := _connector.operations[_action]

_operation_known if is_object(_operation)

# An operation whose risk is not "read" is treated as a write: shorter TTL, one use.
_risk := "read" if {
	_operation.risk == "read"
} else := "write" if {
	_operation_known
}

# Requested constraint names that the operation's catalogue does not define.
_unknown_constraints contains name if {
	_operation_known
	some name, _ in _req_constraints
	not _operation.constraints[name]
}

# ---------------------------------------------------------------------------------------
# The task's declared purpose: any task.allowed entry for the connector may cover it.
# ---------------------------------------------------------------------------------------

# Indexes of task.allowed entries for the requested connector.
_candidates contains i if {
	some i, entry in input.task.allowed
	entry.type == "connector"
	entry.connector == _connector_id
}

_declares_action(entry) if {
	is_array(entry.actions)
	_action in entry.actions
}

_some_entry_declares_action if {
	some i in _candidates
	_declares_action(input.task.allowed[i])
}

# Whether some entry covers the request: the action declared, every declared constraint
# present in the request and no wider. A positive check on the values alone: it never
# depends on a refusal's reason being rendered, and it builds no text (in WebAssembly every
# string a rule builds stays allocated until the evaluation ends).
_covered if {
	_well_formed
	some i in _candidates
	_declares_action(input.task.allowed[i])
	_entry_covers(i)
}

_entry_covers(i) if {
	constraints := object.get(input.task.allowed[i], "constraints", {})
	is_object(constraints)
	every name, _ in constraints {
		[i, name] in _within_declared
	}
}

# [i, name] for each constraint `name` of candidate entry i that the request holds within:
# the operation defines it with an operator the policy knows, the request gives it, and its
# value is no wider than the declared one. A rule, so each comparison runs once per request
# (an `in` compares up to 100 x 100 values).
_within_declared contains [i, name] if {
	_well_formed
	some i in _candidates
	some name, declared in object.get(input.task.allowed[i], "constraints", {})
	_operation.constraints[name]
	_has_key(_req_constraints, name)
	_within(_operation.constraints[name].op, _req_constraints[name], declared)
}

# Covered when problems caused by the catalogue (an operator the policy does not know)
# are set aside: such a refusal is a configuration error, not an out-of-purpose request.
_purpose_covered if {
	_well_formed
	some i in _candidates
	_declares_action(input.task.allowed[i])
	constraints := object.get(input.task.allowed[i], "constraints", {})
	is_object(constraints)
	every name, _ in constraints {
		_within_purpose(i, name)
	}
}

_within_purpose(i, name) if [i, name] in _within_declared

_within_purpose(_, name) if {
	_operation.constraints[name]
	_has_key(_req_constraints, name)
	_unsupported_operator_message(name)
}

# The problems of candidate entry i, for the reasons of a refusal.
_constraint_problems(i) := {"the task's allowed entry for this connector has malformed constraints"} if {
	not is_object(object.get(input.task.allowed[i], "constraints", {}))
} else := {msg |
	some name, declared in object.get(input.task.allowed[i], "constraints", {})
	msg := _constraint_problem(i, name, declared)
}

_constraint_problem(i, name, declared) := msg if {
	not _operation.constraints[name]
	msg := concat("", [
		"constraint ", name, " declared by the task cannot be enforced on ", _action,
		": the catalogue of connector ", _connector_id, " does not define it for that operation",
	])
} else := msg if {
	not _has_key(_req_constraints, name)
	msg := concat("", ["constraint ", name, " is declared by the task but missing from the request"])
} else := msg if {
	msg := _unsupported_operator_message(name)
} else := msg if {
	not [i, name] in _within_declared
	op := _operation.constraints[name].op
	requested := _req_constraints[name]
	msg := _widening_message(name, op, requested, declared)
}

_unsupported_operator_message(name) := concat("", [
	"constraint ", name, " of operation ", _action,
	" uses operator ", _show(op), ", which the policy does not support",
]) if {
	op := object.get(_operation.constraints[name], "op", null)
	not op in {"eq", "lte", "gte", "in"}
}

_within("eq", requested, declared) if requested == declared

_within("lte", requested, declared) if {
	is_number(requested)
	is_number(declared)
	requested <= declared
}

_within("gte", requested, declared) if {
	is_number(requested)
	is_number(declared)
	requested >= declared
}

_within("in", requested, declared) if {
	is_array(requested)
	is_array(declared)
	every value in requested {
		value in declared
	}
}

_widening_message(name, "eq", requested, declared) := concat("", [
	"constraint ", name, " ", _show(requested),
	" differs from the declared ", _show(declared), " (eq)",
])

_widening_message(name, op, requested, declared) := concat("", [
	"constraint ", name, " ", _show(requested),
	" is wider than the declared ", _show(declared), " (", op, ")",
]) if {
	op != "eq"
}

# ---------------------------------------------------------------------------------------
# Refusals. Each adds one reason. Allowing also needs every positive check in _ready, so
# a reason that fails to render can never turn a refusal into an allow.
# ---------------------------------------------------------------------------------------

_agent_active if input.agent.status == "active"

_agent_matches_task if input.task.agent_id == input.agent.id

_task_active if {
	input.task.status == "active"
	is_number(input.task.seconds_remaining)
	input.task.seconds_remaining > 0
}

_agent_given if is_object(input.agent)

_task_given if is_object(input.task)

_refusals contains "the input names no agent" if not _agent_given

_refusals contains "the input names no task" if not _task_given

_refusals contains msg if {
	_agent_given
	not _agent_active
	msg := concat("", [
		"agent ", _show(object.get(input, ["agent", "id"], null)), " is not active (status ",
		_show(object.get(input, ["agent", "status"], null)), ")",
	])
}

_refusals contains msg if {
	input.task.agent_id
	input.agent.id
	not _agent_matches_task
	msg := concat("", [
		"the task belongs to agent ", _show(object.get(input, ["task", "agent_id"], null)),
		", not to agent ", _show(object.get(input, ["agent", "id"], null)),
	])
}

_refusals contains msg if {
	_task_given
	not input.task.status == "active"
	msg := concat("", [
		"task ", _show(object.get(input, ["task", "id"], null)), " is not active (status ",
		_show(object.get(input, ["task", "status"], null)), ")",
	])
}

_refusals contains msg if {
	input.task.status == "active"
	not _task_active
	msg := concat("", ["task ", _show(object.get(input, ["task", "id"], null)), " has no time remaining"])
}

_refusals contains "authorization_details must hold exactly one entry (one connector and one action per credential)" if {
	not _single_detail
}

_refusals contains "the authorization_details entry must be of type connector and name a connector" if {
	_single_detail
	not _connector_id
}

_refusals contains "the authorization_details entry must name exactly one action (one connector and one action per credential)" if {
	_single_detail
	not _single_action
}

_refusals contains "the constraints of the authorization_details entry must be an object" if {
	_single_detail
	not _req_constraints_valid
}

_refusals contains msg if {
	is_string(input.request.resource)
	_connector_id
	not endswith(input.request.resource, concat("", ["/connectors/", _connector_id]))
	msg := concat("", ["resource ", input.request.resource, " does not name connector ", _connector_id])
}

_refusals contains msg if {
	_connector_id
	not _connector_known
	msg := concat("", ["connector ", _connector_id, " is not registered"])
}

_refusals contains msg if {
	_connector_known
	_action
	not _operation_known
	msg := concat("", ["operation ", _action, " is not in the catalogue of connector ", _connector_id])
}

_refusals contains msg if {
	some name in _unknown_constraints
	msg := concat("", [
		"constraint ", name, " is not defined by operation ", _action,
		" of connector ", _connector_id,
	])
}

_refusals contains msg if {
	_well_formed
	count(_candidates) == 0
	msg := concat("", ["connector ", _connector_id, " is not declared in the task"])
}

_refusals contains msg if {
	_well_formed
	count(_candidates) > 0
	not _some_entry_declares_action
	msg := concat("", ["action ", _action, " is not declared for connector ", _connector_id, " in the task"])
}

# When no entry covers the request, the problems of every entry that declares the action.
_refusals contains msg if {
	_well_formed
	_operation_known
	not _covered
	some i in _candidates
	_declares_action(input.task.allowed[i])
	some msg in _constraint_problems(i)
}

_refusals contains msg if {
	hours := _business_hours
	not _within_hours(hours)
	msg := concat("", [
		"connector ", _connector_id, " only issues credentials during the business hours ",
		_show(hours), " UTC (hour now: ", _show(object.get(input, ["time", "hour_utc"], null)), ")",
	])
}

_refusals contains msg if {
	_ready_but_ttl
	_ttl_cap < 1
	msg := concat("", ["task ", _show(object.get(input, ["task", "id"], null)), " has less than one second remaining"])
}

# ---------------------------------------------------------------------------------------
# Out of purpose and quarantine.
# ---------------------------------------------------------------------------------------

default _out_of_purpose := false

# Wrong connector.
_out_of_purpose if {
	_well_formed
	count(_candidates) == 0
}

# Action not declared.
_out_of_purpose if {
	_well_formed
	not _some_entry_declares_action
}

# A constraint missing or wider.
_out_of_purpose if {
	_well_formed
	_operation_known
	_some_entry_declares_action
	not _purpose_covered
}

# A constraint the operation does not define.
_out_of_purpose if count(_unknown_constraints) > 0

_prior_out_of_purpose := n if {
	n := input.task.history.out_of_purpose_requests
	is_number(n)
} else := 0

_quarantine_after := n if {
	n := _config.quarantine_after
	_positive_int(n)
} else := 3

default _quarantine := false

_quarantine if {
	_out_of_purpose
	_prior_out_of_purpose + 1 >= _quarantine_after
}

_quarantine_reasons contains msg if {
	_quarantine
	msg := concat("", [
		"quarantine: this is out-of-purpose request ", _show(_prior_out_of_purpose + 1),
		" for the task (threshold ", _show(_quarantine_after), ")",
	])
}

# ---------------------------------------------------------------------------------------
# Approval thresholds (opt-in): data.writ.config.approval[<connector>] is one rule or a
# list of rules {"constraint": NAME, "above": NUMBER, "actions": [..] (optional)}.
# ---------------------------------------------------------------------------------------

# Anything but a list (an object, or a malformed value) is one rule; null is no rule. A
# malformed rule must reach _approval_reasons, where it requires approval: a rule that
# silently applied to nothing would turn an approval the operator asked for into an allow.
_approval_rules contains rule if {
	rule := _config.approval[_connector_id]
	rule != null
	not is_array(rule)
}

_approval_rules contains rule if {
	rules := _config.approval[_connector_id]
	is_array(rules)
	some rule in rules
}

# data.writ.config.approval itself malformed (not an object, e.g. a list of rules without
# their connector): one malformed rule for every connector.
_approval_rules contains rules if {
	rules := _config.approval
	rules != null
	not is_object(rules)
}

_approval_applies(rule) if not _has_key(rule, "actions")

_approval_applies(rule) if {
	is_array(rule.actions)
	_action in rule.actions
}

# `actions` present but not a list of strings: malformed, so it applies (and requires approval).
_approval_applies(rule) if {
	_has_key(rule, "actions")
	not _actions_list(rule)
}

_actions_list(rule) if {
	is_array(rule.actions)
	every action in rule.actions {
		is_string(action)
	}
}

_approval_reasons contains msg if {
	some rule in _approval_rules
	_approval_applies(rule)
	not _well_formed_approval_rule(rule)
	msg := concat("", ["approval required: an approval rule for connector ", _connector_id, " is malformed"])
}

_approval_reasons contains msg if {
	some rule in _approval_rules
	_approval_applies(rule)
	_well_formed_approval_rule(rule)
	_operation.constraints[rule.constraint]
	not _has_key(_req_constraints, rule.constraint)
	msg := concat("", [
		"approval required: constraint ", rule.constraint,
		" is not set, so it cannot be held under the approval threshold ", _show(rule.above),
	])
}

_approval_reasons contains msg if {
	some rule in _approval_rules
	_approval_applies(rule)
	_well_formed_approval_rule(rule)
	_operation.constraints[rule.constraint]
	requested := _req_constraints[rule.constraint]
	not _at_most(requested, rule.above)
	msg := concat("", [
		"approval required: constraint ", rule.constraint, " ", _show(requested),
		" is above the approval threshold ", _show(rule.above),
	])
}

_well_formed_approval_rule(rule) if {
	is_string(rule.constraint)
	is_number(rule.above)
	not _malformed_actions(rule)
}

_malformed_actions(rule) if {
	_has_key(rule, "actions")
	not _actions_list(rule)
}

_at_most(value, limit) if {
	is_number(value)
	value <= limit
}

# ---------------------------------------------------------------------------------------
# Business hours (opt-in): data.writ.config.connectors[<id>].business_hours_utc = [start,
# end], hours 0..24, start inclusive, end exclusive; start > end spans midnight.
# ---------------------------------------------------------------------------------------

_business_hours := hours if {
	hours := _config.connectors[_connector_id].business_hours_utc
	hours != null
}

_within_business_hours if not _business_hours

_within_business_hours if _within_hours(_business_hours)

_within_hours([start, end]) if {
	is_number(start)
	is_number(end)
	start <= end
	start <= input.time.hour_utc
	input.time.hour_utc < end
}

_within_hours([start, end]) if {
	is_number(start)
	is_number(end)
	start > end
	_overnight_hour(start, end, input.time.hour_utc)
}

_overnight_hour(start, _, hour) if hour >= start

_overnight_hour(_, end, hour) if hour < end

# ---------------------------------------------------------------------------------------
# Caps: TTL by risk, per-connector override (the smaller wins), never past the task.
# ---------------------------------------------------------------------------------------

_risk_ttl := t if {
	t := _config.ttl_seconds[_risk]
	_positive_number(t)
} else := _default_config.ttl_seconds[_risk]

_ttl_caps contains t if t := _risk_ttl

_ttl_caps contains t if {
	t := _config.connectors[_connector_id].max_ttl_seconds
	_positive_number(t)
}

_ttl_caps contains t if {
	_risk
	t := input.task.seconds_remaining
	is_number(t)
}

_ttl_cap := floor(min(_ttl_caps)) if _risk

# Reads: data.writ.config.read_max_uses (null = unlimited); anything else that is not a
# positive integer counts as 1.
_uses_cap := 1 if {
	_risk == "write"
} else := n if {
	n := _config.read_max_uses
	_positive_int(n)
} else := null if {
	_config.read_max_uses == null
} else := 1

# ---------------------------------------------------------------------------------------
# The decision's fields.
# ---------------------------------------------------------------------------------------

# Every positive check except the TTL floor (split out to give that its own reason).
_ready_but_ttl if {
	_agent_active
	_agent_matches_task
	_task_active
	_well_formed
	_operation_known
	_covered
	count(_unknown_constraints) == 0
	_within_business_hours
}

_ready if {
	_ready_but_ttl
	_ttl_cap >= 1
	count(_refusals) == 0
}

default _requires_approval := false

_requires_approval if {
	_ready
	count(_approval_reasons) > 0
}

default _allow := false

_allow if {
	_ready
	not _requires_approval
}

default _max_ttl_seconds := 0

_max_ttl_seconds := _ttl_cap if _ready

default _max_uses := 0

_max_uses := _uses_cap if _ready

_reasons := ["the request is within the task's declared purpose"] if {
	_allow
} else := sort(_approval_reasons) if {
	_requires_approval
} else := sort(_refusals | _quarantine_reasons) if {
	count(_refusals | _quarantine_reasons) > 0
} else := ["the request was refused by the policy"]

# ---------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------

_has_key(obj, key) if {
	some k, _ in obj
	k == key
}

_positive_number(x) if {
	is_number(x)
	x > 0
}

_positive_int(x) if {
	is_number(x)
	x >= 1
	x == floor(x)
}

# A value for a reason: strings as they are, arrays as [a, b], others as JSON. An array
# shows its first _shown_values values: in WebAssembly each json.marshal keeps about 1 KiB
# until the evaluation ends, and a refusal renders one reason per declaring entry and
# constraint, so 100-value arrays in every one exhausted the module's memory (a trap: a
# deny that is not counted out of purpose).
_shown_values := 10

_show(x) := x if {
	is_string(x)
} else := concat("", ["[", concat(", ", [_scalar(v) | some v in array.slice(x, 0, _shown_values)]), _more_values(x), "]"]) if {
	is_array(x)
} else := json.marshal(x)

_more_values(x) := "" if {
	count(x) <= _shown_values
} else := concat("", [", ... (", json.marshal(count(x)), " values)"])

_scalar(x) := x if {
	is_string(x)
} else := json.marshal(x)
