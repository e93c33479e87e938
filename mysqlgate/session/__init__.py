"""One client's session, in rooms with one job each. Imports run one way, from top to
bottom of this list; news goes back up through interfaces defined below
(commands.CommandOwner, exchange.ExchangeOwner, replies.ClientPort,
context.ClientHandle):

    session.py       lifecycle and dispatch: the one class others use
    login.py         the login and COM_CHANGE_USER
    kill.py          KILL and COM_PROCESS_KILL from a client
    attach.py        getting, keeping and giving back an upstream connection
    commands.py      a command sent upstream, and its end: over, run again, or lost
    exchange.py      its response in flight: forwarded as it comes, read for the session
    statements.py    prepared statements: client ids, answers given here
    tracking.py      what answers say of the session; answers given in the server's stead
    replies.py       the client's socket as a session sees it; packets mysqlgate makes
    client_state.py  the session's data, and why it keeps a connection
"""

from .session import Session

__all__ = ["Session"]
