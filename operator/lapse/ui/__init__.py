"""`kubectl lapse ui`: a web page for requesters, approvers and on-call, acting as the user.

Approvers are often not terminal people; they want to see what waits for them, what a grant
gives and how long it has left, and act with one click. The page is served on loopback by the
user's own `kubectl lapse`, and every read and click is an API request with the user's
kubeconfig credentials through the CLI's client: RBAC and Lapse's admission webhooks judge it
exactly as they judge kubectl. The page adds no identity and no privilege of its own.
"""
