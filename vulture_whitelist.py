"""Names vulture cannot see used: framework callbacks and schema fields.

Run as ``vulture reconciler vulture_whitelist.py``. Entries are grouped by the
file that defines them (one block per file keeps parallel edits mergeable).
"""
# ruff: noqa
# mypy: ignore-errors

# -- core: click commands (registered by decorator, called by click) ---------------
# reconciler/cli/auth.py
_.login_command
_.status_command
_.do_GET  # http.server.BaseHTTPRequestHandler callbacks
_.log_message
# reconciler/cli/history.py
_.list_command
_.show_command
_.as_of_command
_.verify_command
_.export_command
# reconciler/cli/live.py
_.set_command
# reconciler/cli/lock.py
_.status_command
# reconciler/cli/secret.py
_.keygen
_.encrypt_command
# reconciler/cli/convert.py
_.preserve_quotes  # ruamel.yaml YAML option, read by ruamel
# reconciler/oauth/flows.py
_.trust_env  # requests.Session option, read by requests

# -- core: pydantic models (fields and enum members are the schema; validators run by pydantic)
# reconciler/config/models/base.py
_.model_config
_.annotations
_._operands
# reconciler/config/models/incoming_server.py
_.technician_group
_.category
# reconciler/config/models/mail_settings.py
_._prefixes
# reconciler/config/models/proxy_server.py
_.HTTPS
# reconciler/config/models/recipient_filter.py
_._not_empty

# reconciler/incoming/pipeline/directory.py (UserStatus values read from the directory file)
_.ARCHIVED
_.DELETED
# reconciler/incoming/notices.py (Transition.facts, called by the health notifier)
_.facts

# -- core: parser callbacks ----------------------------------------------------------
# reconciler/incoming/pipeline/html_text.py (html.parser.HTMLParser)
_.handle_starttag
_.handle_startendtag
_.handle_endtag
_.handle_data
# reconciler/policy/cel.py (lark Interpreter: one method per grammar rule)
_.c_expr
_.c_conditionalor
_.c_conditionaland
_.c_unary
_.c_relation
_.c_addition
_.c_multiplication
_.c_member_dot
_.c_member_index
_.c_member_dot_arg
_.c_ident_arg
_.c_ident
_.c_paren_expr
_.c_list_lit
_.c_map_lit
_.c_literal
