"""The admin console (admin.listen): look inside a running mysqlgate and steer it.

console.py serves the connections, commands.py reads what is typed, views.py builds
what is shown; peer.py tells which OS user is on the other end of a Unix socket."""
