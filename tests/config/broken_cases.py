"""The table of broken inputs (SPEC C4, C5, C7): each a small YAML tree and the exact
diagnostics it must produce. Used by tests/config/test_validate_broken.py (library) and
tests/cli/test_validate.py (all at once through the CLI).

Resource names and namespaces are unique across cases so that every case can also be
validated together with all the others in one folder without changing its findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.config.diagnostics import Severity

from .helpers import Expect

WARNING = Severity.WARNING
SECRET_HINT = "write {secretRef: env:NAME}"


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, str]
    expect: tuple[Expect, ...]
    absent: tuple[str, ...] = field(default=())  # text that must never be printed


CASES: list[Case] = [
    # --- YAML syntax ---------------------------------------------------------------
    Case(
        "yaml-bad-indentation",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata:
              name: indent
             spec:
              email: a@b.example
            """},
        (Expect("a.yaml", 5, 2, "", "YAML syntax error: did not find expected key (while "
                "parsing a block mapping that starts at line 1, column 1)",
                hint="the keys of one mapping must start in the same column"),),
    ),
    Case(
        "yaml-unclosed-quote",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata:
              name: "quote
            spec:
              email: a@b.example
            """},
        (Expect("a.yaml", 4, 9, "", "YAML syntax error: this quoted value is never closed",
                hint="add the matching closing quote"),),
    ),
    Case(
        "yaml-unclosed-bracket",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata:
              name: bracket
            spec:
              email: a@b.example
              spamFilters: [one, two
            """},
        (Expect("a.yaml", 8, 1, "", "YAML syntax error: did not find expected ',' or ']' "
                "(while parsing a flow sequence that starts at line 7, column 16)",
                hint="close the '[' with ']'"),),
    ),
    Case(
        "yaml-tab-indentation",
        {"a.yaml": "apiVersion: reconciler.dev/v1\nkind: ProxyServer\nmetadata:\n"
                   "\tname: tabbed\n"},
        (Expect("a.yaml", 4, 1, "", "YAML syntax error: tab character in indentation",
                hint="indent with spaces, not tabs"),),
    ),
    Case(
        "yaml-control-character",
        {"a.yaml": "apiVersion: reconciler.dev/v1\nkind: Proxy\x07Server\n"},
        (Expect("a.yaml", 2, 12, "", "cannot read YAML: character #x0007 is not allowed "
                "(control characters are not allowed)"),),
    ),
    Case(
        "duplicate-key",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata:
              name: dupkey-proxy
            spec:
              host: proxy.b.example
              port: 3128
              host: proxy.c.example
            """},
        (Expect("a.yaml", 8, 3, "", "duplicate key 'host' (first defined at line 6)",
                hint="YAML keeps only the last value"),),
    ),
    Case(
        "duplicate-resource-across-files",
        {
            "one/a.yaml": """
                apiVersion: reconciler.dev/v1
                kind: RecipientFilter
                metadata:
                  name: dup-filter
                spec: {type: allow, domains: [a.example]}
                """,
            "two/b.yaml": """
                # the same name again, in another file
                apiVersion: reconciler.dev/v1
                kind: RecipientFilter
                metadata: {name: dup-filter}
                spec: {type: allow, domains: [b.example]}
                """,
        },
        (Expect("two/b.yaml", 4, 18, "metadata.name", "RecipientFilter 'dup-filter' is "
                "defined twice in namespace 'default' (first at {dir}one/a.yaml:4)",
                hint="rename one of them"),),
    ),
    # --- envelope --------------------------------------------------------------------
    Case(
        "unknown-kind",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingSever
            metadata: {name: typo-kind}
            spec: {}
            """},
        (Expect("a.yaml", 2, 7, "kind", "unknown kind 'OutgoingSever'",
                hint="did you mean 'OutgoingServer'?"),),
    ),
    Case(
        "missing-kind",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            metadata: {name: no-kind}
            spec: {}
            """},
        (Expect("a.yaml", 1, 1, "", "`kind` is missing", hint="e.g. kind: OutgoingServer"),),
    ),
    Case(
        "unsupported-api-version",
        {"a.yaml": """
            apiVersion: reconciler.dev/v3
            kind: RecipientFilter
            metadata: {name: future}
            spec: {type: allow, domains: [a.example]}
            """},
        (Expect("a.yaml", 1, 13, "apiVersion", "unsupported apiVersion 'reconciler.dev/v3'",
                hint="use reconciler.dev/v1 (older versions still read: "
                "reconciler.dev/v1alpha1)"),),
    ),
    Case(
        "missing-api-version",
        {"a.yaml": """
            kind: RecipientFilter
            metadata: {name: no-version}
            spec: {type: allow, domains: [a.example]}
            """},
        (Expect("a.yaml", 1, 1, "", "`apiVersion` is missing"),),
    ),
    Case(
        "top-level-list",
        {"a.yaml": """
            - apiVersion: reconciler.dev/v1
              kind: RecipientFilter
            """},
        (Expect("a.yaml", 1, 1, "", "a resource document must be a mapping with apiVersion, "
                "kind, metadata and spec"),),
    ),
    Case(
        "scalar-document",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: RecipientFilter
            metadata: {name: before-scalar}
            spec: {type: allow, domains: [a.example]}
            ---
            just some words
            """},
        (Expect("a.yaml", 6, 1, "", "a resource document must be a mapping with apiVersion, "
                "kind, metadata and spec"),),
    ),
    # --- schema: fields and types -----------------------------------------------------
    Case(
        "unknown-field",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata:
              name: unknown-field
              namespace: unknown-field
            spec:
              email: a@b.example
              replyTO: x@b.example
            """},
        (Expect("a.yaml", 8, 3, "spec.replyTO", "unknown field 'replyTO'",
                hint="did you mean 'replyTo'?"),),
    ),
    Case(
        "unknown-nested-field",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: nested-field}
            spec:
              email: a@b.example
              host: imap.b.example
              errorFolder:
                enabled: true
                stopFetchingAftr: 10
            """},
        (Expect("a.yaml", 9, 5, "spec.errorFolder.stopFetchingAftr",
                "unknown field 'stopFetchingAftr'", hint="did you mean 'stopFetchingAfter'?"),),
    ),
    Case(
        "missing-required-field",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: no-port}
            spec:
              host: proxy.b.example
            """},
        (Expect("a.yaml", 5, 3, "spec.port", "required field is missing"),),
    ),
    Case(
        "string-for-int",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: string-port}
            spec:
              host: proxy.b.example
              port: three-one-two-eight
            """},
        (Expect("a.yaml", 6, 9, "spec.port", "'three-one-two-eight' is not a whole number"),),
    ),
    Case(
        "list-for-mapping",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: list-auth, namespace: list-auth}
            spec:
              email: a@b.example
              host: smtp.b.example
              auth: [basic]
            """},
        (Expect("a.yaml", 7, 9, "spec.auth", "expected a mapping, got a list"),),
    ),
    Case(
        "list-for-text",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: list-reply-to, namespace: list-reply-to}
            spec:
              email: a@b.example
              host: smtp.b.example
              replyTo: [a@b.example, c@b.example]
            """},
        (Expect("a.yaml", 7, 12, "spec.replyTo", "expected text, got a list",
                hint="write a single value"),),
    ),
    Case(
        "non-boolean",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: SpamFilter
            metadata: {name: maybe-enabled}
            spec:
              enabled: maybe
              conditions: [{field: subject, value: x}]
            """},
        (Expect("a.yaml", 5, 12, "spec.enabled", "'maybe' is not a boolean",
                hint="write true or false"),),
    ),
    Case(
        # YAML 1.1 read `no` as false; we read YAML 1.2, and a string is never coerced.
        "yaml11-boolean-word",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: SpamFilter
            metadata: {name: norway-enabled}
            spec:
              enabled: no
              conditions: [{field: subject, value: x}]
            """},
        (Expect("a.yaml", 5, 12, "spec.enabled", "'no' is not a boolean",
                hint="write true or false"),),
    ),
    Case(
        "enum-typo",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: RecipientFilter
            metadata: {name: enum-typo}
            spec:
              type: allw
              domains: [a.example]
            """},
        (Expect("a.yaml", 5, 9, "spec.type", "'allw' is not one of 'allow' or 'ignore'",
                hint="did you mean 'allow'?"),),
    ),
    Case(
        "port-out-of-range",
        {"outgoing/gmail.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata:
              name: big-port
              namespace: big-port
            spec:
              email: a@b.example
              host: smtp.b.example
              port: 70000
            """},
        (Expect("outgoing/gmail.yaml", 9, 9, "spec.port", "70000 is above the maximum 65535"),),
    ),
    Case(
        "not-greater-than-zero",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: MailSettings
            metadata: {name: zero-limit, namespace: zero-limit}
            spec:
              attachmentLimitMB: 0
            """},
        (Expect("a.yaml", 5, 22, "spec.attachmentLimitMB", "0 must be greater than 0"),),
    ),
    # --- schema: formats --------------------------------------------------------------
    Case(
        "bad-resource-name",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata:
              name: Corp_Proxy
            spec: {host: proxy.b.example, port: 3128}
            """},
        (Expect("a.yaml", 4, 9, "metadata.name", "'Corp_Proxy' is not a valid name: use 1-63 "
                "lowercase letters, digits and '-', starting and ending with a letter or "
                "digit"),),
    ),
    Case(
        "bad-email",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: bad-email}
            spec:
              email: support.b.example
              host: imap.b.example
            """},
        (Expect("a.yaml", 5, 10, "spec.email", "'support.b.example' is not a valid email "
                "address: An email address must have an @-sign"),),
    ),
    Case(
        "host-with-scheme",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: host-scheme}
            spec:
              email: a@b.example
              host: imaps://imap.b.example
            """},
        (Expect("a.yaml", 6, 9, "spec.host", "'imaps://imap.b.example' is not a host name; "
                "give only the host, e.g. smtp.example.com"),),
    ),
    Case(
        "host-with-port",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: host-port}
            spec:
              host: proxy.b.example:3128
              port: 3128
            """},
        (Expect("a.yaml", 5, 9, "spec.host", "'proxy.b.example:3128' is not a host name; put "
                "the port in the `port` field"),),
    ),
    Case(
        "bad-url",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: bad-url}
            spec:
              email: a@b.example
              protocol: ews
              ewsUrl: mail.b.example/EWS/Exchange.asmx
            """},
        (Expect("a.yaml", 7, 11, "spec.ewsUrl", "'mail.b.example/EWS/Exchange.asmx' is not an "
                "absolute http(s) URL"),),
    ),
    Case(
        "domain-with-at",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: RecipientFilter
            metadata: {name: at-domain}
            spec:
              type: allow
              domains: [a.example, "@b.example"]
            """},
        (Expect("a.yaml", 6, 24, "spec.domains.1", "'@b.example': write the domain without "
                "'@'"),),
    ),
    # --- secrets (C5) -----------------------------------------------------------------
    Case(
        "literal-secret",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: literal-secret}
            spec:
              email: a@b.example
              host: imap.b.example
              auth:
                type: basic
                password: Hunter2-Sup3rSecret
            """},
        (Expect("a.yaml", 9, 15, "spec.auth.password", "a literal secret is not allowed here",
                hint=SECRET_HINT),),
        absent=("Hunter2-Sup3rSecret",),
    ),
    Case(
        "literal-number-secret",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: number-secret}
            spec:
              host: proxy.b.example
              port: 3128
              password: 80417326
            """},
        (Expect("a.yaml", 7, 13, "spec.password", "a literal secret is not allowed here",
                hint=SECRET_HINT),),
        absent=("80417326",),
    ),
    Case(
        "bad-env-reference",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: bad-env}
            spec:
              host: proxy.b.example
              port: 3128
              password: {secretRef: "env:PROXY-PASSWORD"}
            """},
        (Expect("a.yaml", 7, 13, "spec.password", "env: reference needs a variable name of "
                "letters, digits and '_', e.g. env:SMTP_PASSWORD"),),
        absent=("PROXY-PASSWORD",),  # what follows env: may be a pasted secret
    ),
    Case(
        "unknown-secret-scheme",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: vault-secret}
            spec:
              host: proxy.b.example
              port: 3128
              password: {secretRef: "vault:kv/proxy#password"}
            """},
        (Expect("a.yaml", 7, 13, "spec.password", "unknown secret reference scheme; use "
                "env:NAME, file:/path or enc:v1:..."),),
        absent=("vault:kv/proxy#password",),
    ),
    # --- references -------------------------------------------------------------------
    Case(
        "dangling-rule-server",
        {"rules.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingEmailRule
            metadata: {name: orphan-rule, namespace: orphan}
            spec:
              module: request
              order: 1
              server: no-such-server
            """},
        (Expect("rules.yaml", 7, 11, "spec.server", "OutgoingServer 'no-such-server' does not "
                "exist in namespace 'orphan'",
                hint="add an OutgoingServer named 'no-such-server' or fix the name"),),
    ),
    Case(
        "dangling-server-filter-and-proxy",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: refs, namespace: refs}
            spec:
              email: a@b.example
              replyTo: a@b.example
              host: smtp.b.example
              primary: true
              recipientFilter: corp-ony
              proxy: shared-egress
            ---
            apiVersion: reconciler.dev/v1
            kind: RecipientFilter
            metadata: {name: corp-only, namespace: refs}
            spec: {type: allow, domains: [b.example]}
            ---
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: shared-egress, namespace: refs-other}
            spec: {host: proxy.b.example, port: 3128}
            """},
        (
            Expect("a.yaml", 9, 20, "spec.recipientFilter", "RecipientFilter 'corp-ony' does "
                   "not exist in namespace 'refs'", hint="did you mean 'corp-only'?"),
            Expect("a.yaml", 10, 10, "spec.proxy", "ProxyServer 'shared-egress' does not exist "
                   "in namespace 'refs'", hint="ProxyServer 'shared-egress' exists in namespace "
                   "'refs-other'; references stay within one namespace"),
        ),
    ),
    Case(
        "dangling-incoming-refs",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: SpamFilter
            metadata: {name: in-refs-spam, namespace: in-refs}
            spec:
              conditions: [{field: subject, operator: contains, value: lottery}]
            ---
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: in-refs, namespace: in-refs}
            spec:
              email: a@b.example
              host: imap.b.example
              spamFilters: [in-refs-spam, bulk-mail]
              emailCommand: desk-commands
            """},
        (
            Expect("a.yaml", 13, 31, "spec.spamFilters.1", "SpamFilter 'bulk-mail' does not "
                   "exist in namespace 'in-refs'"),
            Expect("a.yaml", 14, 17, "spec.emailCommand", "EmailCommand 'desk-commands' does not "
                   "exist in namespace 'in-refs'", hint="add an EmailCommand"),
        ),
    ),
    # --- semantic checks (C7) ---------------------------------------------------------
    Case(
        "no-primary",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: lonely, namespace: no-primary}
            spec:
              email: a@b.example
              replyTo: a@b.example
              host: smtp.b.example
            """},
        (Expect("a.yaml", 4, 1, "spec", "namespace 'no-primary' has no enabled primary "
                "OutgoingServer; notifications that match no rule could not be sent",
                hint="set `primary: true`"),),
    ),
    Case(
        "two-primaries",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: first, namespace: two-primaries}
            spec: {email: a@b.example, replyTo: a@b.example, host: smtp.b.example, primary: true}
            ---
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: second, namespace: two-primaries}
            spec:
              email: a@b.example
              replyTo: a@b.example
              host: smtp.b.example
              primary: true
            """},
        (Expect("a.yaml", 13, 12, "spec.primary", "namespace 'two-primaries' has more than one "
                "primary OutgoingServer (also 'first' in {dir}a.yaml)",
                hint="keep `primary: true` on exactly one server"),),
    ),
    Case(
        "disabled-primary",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: sleeper, namespace: disabled-primary}
            spec:
              email: a@b.example
              replyTo: a@b.example
              host: smtp.b.example
              primary: true
              enabled: false
            """},
        (Expect("a.yaml", 4, 1, "spec", "namespace 'disabled-primary' has no enabled primary "
                "OutgoingServer; notifications that match no rule could not be sent",
                hint="sleeper is primary but disabled; enable it"),),
    ),
    Case(
        "port-security-mismatch",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: mismatch, namespace: mismatch}
            spec:
              email: a@b.example
              replyTo: a@b.example
              host: smtp.b.example
              port: 465
              security: starttls
              primary: true
            """},
        (Expect("a.yaml", 8, 9, "spec.port", "port 465 usually means security tls, but "
                "security is starttls", severity=WARNING,
                hint="use port 587 for starttls, or security tls for 465"),),
    ),
    Case(
        "graph-without-microsoft-oauth",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: graph-basic, namespace: graph-basic}
            spec:
              email: a@b.example
              replyTo: a@b.example
              protocol: graph
              primary: true
              auth:
                type: oauth2
                provider: google
                clientId: abc.apps.googleusercontent.com
                clientSecret: {secretRef: env:GOOGLE_SECRET}
            """},
        (Expect("a.yaml", 10, 5, "spec.auth", "Microsoft Graph accepts only Microsoft OAuth 2.0",
                hint="auth.provider: microsoft"),),
    ),
    Case(
        "ews-google-oauth-no-host",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: ews-google, namespace: ews-google}
            spec:
              email: a@b.example
              replyTo: a@b.example
              protocol: ews
              primary: true
              auth:
                type: oauth2
                provider: google
                clientId: abc.apps.googleusercontent.com
                clientSecret: {secretRef: env:GOOGLE_SECRET}
            """},
        (
            Expect("a.yaml", 4, 1, "spec", "EWS needs `host` or `ewsUrl`",
                   hint="ewsUrl is derived from it"),
            Expect("a.yaml", 11, 15, "spec.auth.provider", "EWS is an Exchange/Office 365 API; "
                   "OAuth for it comes from Microsoft", hint="use provider: microsoft"),
        ),
    ),
    Case(
        "graph-shared-client-id",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: graph-out, namespace: graph-shared}
            spec:
              email: desk@b.example
              replyTo: desk@b.example
              protocol: graph
              primary: true
              auth:
                type: oauth2
                grant: clientCredentials
                tenant: b.onmicrosoft.com
                clientId: 11111111-2222-3333-4444-555555555555
                clientSecret: {secretRef: env:GRAPH_SECRET}
            ---
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: graph-in, namespace: graph-shared}
            spec:
              email: Desk@B.example
              protocol: graph
              auth:
                type: oauth2
                grant: clientCredentials
                tenant: b.onmicrosoft.com
                clientId: 11111111-2222-3333-4444-555555555555
                clientSecret: {secretRef: env:GRAPH_SECRET}
            """},
        (Expect("a.yaml", 13, 15, "spec.auth.clientId", "mailbox desk@b.example is used by "
                "IncomingServer 'graph-in' with the same Graph client id; Microsoft throttles "
                "them together", hint="register a second app"),),
    ),
    Case(
        "oauth-client-credentials-incomplete",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: app-only}
            spec:
              email: a@b.example
              protocol: graph
              auth:
                type: oauth2
                grant: clientCredentials
                clientId: 11111111-2222-3333-4444-555555555555
            """},
        (
            Expect("a.yaml", 7, 3, "spec.auth", "client credentials grant needs `clientSecret`",
                   hint="clientSecret: {secretRef: env:NAME}"),
            Expect("a.yaml", 7, 3, "spec.auth", "app-only Microsoft tokens need `tenant`",
                   hint="contoso.onmicrosoft.com"),
        ),
    ),
    Case(
        "oauth-generic-without-urls",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: generic-oauth}
            spec:
              email: a@b.example
              host: imap.b.example
              auth: {type: oauth2, provider: generic, clientId: desk}
            """},
        (
            Expect("a.yaml", 7, 3, "spec.auth", "generic OAuth provider needs `tokenUrl`"),
            Expect("a.yaml", 7, 3, "spec.auth", "generic OAuth provider needs "
                   "`authorizationUrl`"),
            Expect("a.yaml", 7, 3, "spec.auth", "generic OAuth provider needs `scope`"),
        ),
    ),
    Case(
        "error-folder-on-pop3",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingServer
            metadata: {name: pop-errors}
            spec:
              email: a@b.example
              protocol: pop3s
              host: pop.b.example
              errorFolder: {enabled: true}
            """},
        (Expect("a.yaml", 8, 26, "spec.errorFolder.enabled", "POP3 has no folders; the error "
                "folder cannot be used", hint="use IMAP, or disable errorFolder"),),
    ),
    # --- conditions and settings -------------------------------------------------------
    Case(
        "condition-in-without-values",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: IncomingEmailRule
            metadata: {name: in-no-values}
            spec:
              order: 1
              conditions:
                - field: subject
                  operator: in
              action: ignore
            """},
        (Expect("a.yaml", 7, 7, "spec.conditions.0", "operator 'in' needs `values` (a list)"),),
    ),
    Case(
        "condition-invalid-regex",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: SpamFilter
            metadata: {name: bad-regex}
            spec:
              conditions:
                - {field: subject, operator: contains, value: win}
                - {field: subject, operator: regex, value: "([a-z]+"}
            """},
        (Expect("a.yaml", 7, 7, "spec.conditions.1", "invalid regular expression: missing ), "
                "unterminated subpattern at position 0"),),
    ),
    Case(
        "base-delimiter-too-long",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: MailSettings
            metadata: {name: long-delimiter, namespace: long-delimiter}
            spec:
              baseDelimiter: "###########"
            """},
        (Expect("a.yaml", 5, 18, "spec.baseDelimiter", "baseDelimiter must be 1-10 of the "
                "characters ! @ # $ % ^ &"),),
    ),
    Case(
        "base-delimiter-letter",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: MailSettings
            metadata: {name: letter-delimiter, namespace: letter-delimiter}
            spec:
              baseDelimiter: "#X"
            """},
        (Expect("a.yaml", 5, 18, "spec.baseDelimiter", "baseDelimiter must be 1-10 of the "
                "characters ! @ # $ % ^ &"),),
    ),
    Case(
        "request-id-prefix-clash",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: MailSettings
            metadata: {name: prefix-clash, namespace: prefix-clash}
            spec:
              requestIdPrefixes:
                request: RQ
                task: RQ
            """},
        (Expect("a.yaml", 6, 5, "spec.requestIdPrefixes", "prefix 'RQ' is used by both "
                "'request' and 'task'"),),
    ),
    Case(
        "spam-filter-misspelt-field",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: SpamFilter
            metadata: {name: misspelt, namespace: misspelt}
            spec:
              conditions:
                - {field: subjet, operator: contains, value: prize}
            """},
        (Expect("a.yaml", 6, 15, "spec.conditions.0.field", "unknown mail field 'subjet': did "
                "you mean 'subject'? use one of subject, from, fromName, replyTo, to, cc, body, "
                "or header:NAME for any header"),),
    ),
    Case(
        "rule-to-disabled-server",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: hr-off, namespace: rule-disabled}
            spec: {email: hr@b.example, replyTo: d@b.example, host: smtp.b.example, enabled: false}
            ---
            apiVersion: reconciler.dev/v1
            kind: OutgoingServer
            metadata: {name: main-on, namespace: rule-disabled}
            spec: {email: desk@b.example, replyTo: d@b.example, host: smtp.b.example, primary: true}
            ---
            apiVersion: reconciler.dev/v1
            kind: OutgoingEmailRule
            metadata: {name: to-hr-off, namespace: rule-disabled}
            spec: {module: request, order: 1, server: hr-off}
            """},
        (Expect("a.yaml", 14, 43, "spec.server", "OutgoingServer 'hr-off' is disabled; this "
                "rule is skipped and its mail goes to the next matching rule or the primary",
                WARNING, hint="enable hr-off"),),
    ),
    Case(
        "empty-recipient-filter",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: RecipientFilter
            metadata: {name: empty-filter}
            spec:
              type: ignore
              emails: []
            """},
        (Expect("a.yaml", 5, 3, "spec", "a filter needs at least one entry in `emails` or "
                "`domains`"),),
    ),
    # --- all at once --------------------------------------------------------------------
    Case(
        "errors-in-two-documents-of-one-file",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: multi-one}
            spec: {host: proxy.b.example, port: 0}
            ---
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: multi-two}
            spec: {host: proxy.b.example, port: 3128}
            ---
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: multi-three}
            spec: {host: proxy.b.example, port: 3128, type: ftp}
            """},
        (
            Expect("a.yaml", 4, 37, "spec.port", "0 is below the minimum 1"),
            Expect("a.yaml", 14, 49, "spec.type", "'ftp' is not one of 'http', 'https' or "
                   "'socks5'"),
        ),
    ),
    Case(
        "error-after-syntax-error-in-previous-file",
        {
            "a-broken.yaml": """
                apiVersion: reconciler.dev/v1
                kind: ProxyServer
                metadata: {name: [broken
                """,
            "b-later.yaml": """
                apiVersion: reconciler.dev/v1
                kind: ProxyServer
                metadata: {name: after-broken}
                spec: {host: proxy.b.example, port: 99999}
                """,
        },
        (
            Expect("a-broken.yaml", 4, 1, "", "YAML syntax error: did not find expected ',' "
                   "or ']' (while parsing a flow sequence that starts at line 3, column 18)"),
            Expect("b-later.yaml", 4, 37, "spec.port", "99999 is above the maximum 65535"),
        ),
    ),
    Case(
        "error-after-syntax-error-in-same-file",
        {"a.yaml": """
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: before-broken}
            spec: {host: "proxy b", port: 3128}
            ---
            apiVersion: reconciler.dev/v1
            kind: ProxyServer
            metadata: {name: x
            """},
        (
            Expect("a.yaml", 4, 14, "spec.host", "'proxy b' is not a valid host name"),
            Expect("a.yaml", 9, 1, "", "YAML syntax error: did not find expected ',' or '}' "
                   "(while parsing a flow mapping that starts at line 8, column 11)"),
        ),
    ),
]
