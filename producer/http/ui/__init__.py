"""The results console at ``/ui``: a small vanilla-JS front end served by the API itself (no CDN).

It signs in with an API key (kept in ``sessionStorage``) and reads the tenant's own JSON API with it."""
