"""OAuth2 for mail servers (SPEC O11): token providers (:mod:`.provider`, built with
:func:`~reconciler.oauth.provider.provider_for_store`), the flows that talk to identity
providers, the encrypted token cache, and the meaning of identity-provider errors."""
