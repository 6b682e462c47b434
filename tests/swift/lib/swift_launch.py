#!/usr/bin/python3
"""Run one Swift server or daemon for the swiftgate Swift test fixture.

Usage: swift_launch.py KIND CONF_FILE
KIND: proxy-server | account-server | container-server | object-server |
      container-updater

This does what the stock /usr/bin/swift-* scripts do (it calls the same
run_wsgi() / run_daemon()), with two changes made before Swift reads any
configuration:

* swift.conf (hash path prefix/suffix, storage policies, constraints) is read
  from $SWIFT_AIO_SWIFT_DIR/swift.conf. Swift hard-codes /etc/swift/swift.conf
  and has no option for it; the fixture must neither read nor edit /etc.
* Logging goes to the file $SWIFT_AIO_LOG. Swift logs through a syslog
  handler; with no /dev/log in this environment it would fall back to UDP on
  localhost:514, a port the fixture must not use.
"""
import logging
import os
import sys
import time

from swift.common import utils

utils.SWIFT_CONF_FILE = os.path.join(os.environ['SWIFT_AIO_SWIFT_DIR'],
                                     'swift.conf')
# validate_configuration() only (re)reads the hash values when they are unset
utils.HASH_PATH_PREFIX = b''
utils.HASH_PATH_SUFFIX = b''
utils.validate_configuration()

LOG_FILE = os.environ['SWIFT_AIO_LOG']


class FileLogHandler(logging.FileHandler):
    """Takes the place of utils.ThreadSafeSysLogHandler(address=, facility=)."""

    def __init__(self, *args, **kwargs):
        logging.FileHandler.__init__(self, LOG_FILE, mode='a',
                                     encoding='utf-8')

    def createLock(self):
        # the lock Swift uses for its syslog handler: safe for both green
        # threads and OS threads
        self.lock = utils.PipeMutex()

    def format(self, record):
        return '%s %s' % (time.strftime('%Y-%m-%dT%H:%M:%S'),
                          logging.FileHandler.format(self, record))


utils.ThreadSafeSysLogHandler = FileLogHandler

# these modules cache swift.conf at import time: import and reload them now
from swift.common import constraints, storage_policy  # noqa: E402

storage_policy.reload_storage_policies()
constraints.reload_constraints()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    kind = sys.argv.pop(1)
    if kind.endswith('-server'):
        from swift.common.wsgi import run_wsgi
        conf_file, options = utils.parse_options()
        kwargs = dict(options)
        if kind == 'object-server':
            from swift.obj import server
            kwargs['global_conf_callback'] = server.global_conf_callback
        return run_wsgi(conf_file, kind, **kwargs)
    if kind == 'container-updater':
        from swift.common.daemon import run_daemon
        from swift.container.updater import ContainerUpdater
        conf_file, options = utils.parse_options(once=True)
        return run_daemon(ContainerUpdater, conf_file, **options)
    sys.exit('unknown kind %r' % kind)


if __name__ == '__main__':
    sys.exit(main())
