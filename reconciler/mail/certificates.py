"""What a failed certificate check means, for every protocol: the one wording and fix.

OpenSSL says why verification failed in ``verify_code``; three causes need different
people to act (a wrong host name in our config, an expired certificate on their
server, a CA this machine does not trust), so each gets its own reason and fix.
``host_field`` names the setting that holds the host (``host``, ``ewsUrl``,
``graphEndpoint``), so the fix points at the line to change.
"""

from __future__ import annotations

import ssl

from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step

_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_CERT_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED

PRIVATE_CA_FIX = ("If the server uses a private CA (or a proxy re-signs its traffic), trust "
                  "that CA with the daemon's ca_file setting or RECONCILE_TLS_CA_FILE; "
                  "certificate checks cannot be switched off.")


def certificate_failure(exc: ssl.SSLCertVerificationError, where: str, *,
                        host_field: str = "host") -> MailFailure:
    """The permanent TLS-verify failure for ``exc`` on the connection to ``where``."""
    said = exc.verify_message or exc.reason or str(exc)
    if exc.verify_code in _NAME_MISMATCH:
        reason, text = Reason.HOSTNAME_MISMATCH, "is for another host name"
        fix = (f"Set {host_field} to a name the certificate lists (usually the published "
               "host name, not an IP address or alias).")
    elif exc.verify_code == _CERT_EXPIRED:
        reason, text = Reason.EXPIRED, "has expired"
        fix = "Whoever runs the server must renew it (or check this machine's clock)."
    else:
        reason, text, fix = Reason.UNTRUSTED, "is not trusted", PRIVATE_CA_FIX
    return MailFailure(Step.TLS, reason, f"the certificate of {where} {text} ({said})",
                       failure=Failure.TLS_VERIFY, permanent=True, likely_fix=fix)
