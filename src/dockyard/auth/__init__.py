"""Who may do what: identities, password files, tokens, the access policy, rate limits, audit.

Nothing here knows HTTP; `api/access.py` turns these decisions into 401/403/429 answers.
"""
