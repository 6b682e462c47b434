"""Keystone's public WSGI app, with writes serialised across processes.

Used instead of /usr/bin/keystone-wsgi-public by both fixture Keystones
(5000 and 5001), which share one SQLite database. SQLite in WAL mode lets
readers run alongside a writer, but when both processes write at the same
time one of them fails at once with "database is locked" (a transaction
that read an older snapshot cannot be upgraded to a write; waiting does not
help, so SQLite's busy timeout doesn't either) and Keystone answers 500.
Seen with app credentials created/deleted through 5000 and 5001 in
parallel.

So every request that may write (any method but GET/HEAD, token issue
included) holds an exclusive flock on $SWIFT_AIO_KEYSTONE_LOCK while Keystone
handles it. Each Keystone is one process with one thread, so this lock is
the only contention: a few ms at most. GET/HEAD (e.g. token validation by
Swift) never wait.
"""
import fcntl
import os

from keystone.server.wsgi import initialize_public_application

_keystone = initialize_public_application()
_lock_fd = os.open(os.environ['SWIFT_AIO_KEYSTONE_LOCK'],
                   os.O_RDWR | os.O_CREAT, 0o600)


def application(environ, start_response):
    if environ.get('REQUEST_METHOD') in ('GET', 'HEAD'):
        return _keystone(environ, start_response)
    fcntl.flock(_lock_fd, fcntl.LOCK_EX)
    try:
        result = _keystone(environ, start_response)
        try:
            body = b''.join(result)   # finish all the work under the lock
        finally:
            if hasattr(result, 'close'):
                result.close()
        return [body]
    finally:
        fcntl.flock(_lock_fd, fcntl.LOCK_UN)
