"""Users, clients, login sessions and consents: domain services.

The CLI, the admin API and the pages all call these; nothing here knows about
click or an HTTP request.
"""
