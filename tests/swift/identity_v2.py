#!/usr/bin/python3
"""A small Keystone identity v2.0 server for tests, backed by real Keystone v3.

Keystone dropped the v2.0 API in Queens, but some providers (ConoHa) still
serve it. This server answers v2.0 password auth by authenticating against a
real Keystone v3 and translating the answer, so the token it hands out is a
real v3 token, valid on the fixture's Swift.

    /usr/bin/python3 tests/swift/identity_v2.py --port 0 \\
        --prefix /identity/v2.0 --keystone http://127.0.0.1:5000

Prints "listening on PORT" (the actual port; --port 0 picks a free one) on
stdout once it accepts connections. Standard library only.

Routes:
  POST {prefix}/tokens   {"auth": {"passwordCredentials": {"username": ..,
                          "password": ..}, "tenantName": .. | "tenantId": ..}}
                         -> 200 {"access": {token, serviceCatalog, user,
                            metadata}}; 401 on bad credentials
  GET  {prefix}, {prefix}/  -> 200 the v2.0 version document
  GET  /                 -> 300 versions document listing v2.0 at {prefix}
Users and projects are looked up in domain Default.
"""
import argparse
import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

V2_MEDIA_TYPE = 'application/vnd.openstack.identity-v2.0+json'
UPDATED = '2014-04-17T00:00:00Z'

ERRORS = {
    400: ('Bad Request', 'The request you have made is invalid.'),
    401: ('Unauthorized',
          'The request you have made requires authentication.'),
    404: ('Not Found', 'The resource could not be found.'),
    405: ('Method Not Allowed', 'The method is not allowed.'),
    502: ('Bad Gateway', 'The identity v3 backend failed.'),
}


def v2_time(v3_time, keep_fraction):
    """'2026-11-25T13:00:09.000000Z' -> '2026-11-25T13:00:09Z' (expires) or
    '2026-11-25T13:00:09.000000' (issued_at), as Keystone v2.0 wrote them."""
    t = v3_time.rstrip('Z')
    if keep_fraction:
        return t
    return t.split('.')[0] + 'Z'


def translate_catalog(v3_catalog, self_url):
    """v3 catalog -> v2 serviceCatalog: one endpoint dict per region with
    publicURL/internalURL/adminURL. The identity service points at this v2
    server, as a v2 catalog would."""
    out = []
    for svc in v3_catalog:
        by_region = {}
        for ep in svc.get('endpoints', []):
            region = ep.get('region_id') or ep.get('region')
            by_region.setdefault(region, {})[ep['interface']] = ep['url']
        endpoints = []
        for region in sorted(by_region, key=str):
            urls = by_region[region]
            if svc['type'] == 'identity':
                urls = {'public': self_url, 'internal': self_url,
                        'admin': self_url}
            ep = {'region': region}
            for iface in ('public', 'internal', 'admin'):
                if iface in urls:
                    ep[iface + 'URL'] = urls[iface]
            endpoints.append(ep)
        out.append({'type': svc['type'], 'name': svc.get('name', ''),
                    'endpoints': endpoints, 'endpoints_links': []})
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'identity-v2-test'

    # -- helpers
    def base_url(self):
        return 'http://%s:%d' % (self.server.public_host,
                                 self.server.server_address[1])

    def send_json(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Vary', 'X-Auth-Token')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def send_error_v2(self, code, message=None):
        title, default = ERRORS.get(code, ('Error', 'Error'))
        self.send_json(code, {'error': {'message': message or default,
                                        'code': code, 'title': title}})

    def version_doc(self):
        return {'id': 'v2.0', 'status': 'stable', 'updated': UPDATED,
                'media-types': [{'base': 'application/json',
                                 'type': V2_MEDIA_TYPE}],
                'links': [{'rel': 'self', 'href': self.base_url()
                           + self.server.prefix + '/'},
                          {'rel': 'describedby', 'type': 'text/html',
                           'href': 'https://docs.openstack.org/'}]}

    def path_only(self):
        return self.path.split('?', 1)[0]

    # -- routes
    def do_GET(self):
        path, prefix = self.path_only(), self.server.prefix
        if path == '/':
            self.send_json(300, {'versions': {'values': [self.version_doc()]}})
        elif path in (prefix, prefix + '/'):
            self.send_json(200, {'version': self.version_doc()})
        else:
            self.send_error_v2(404)

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if self.path_only().rstrip('/') != self.server.prefix + '/tokens':
            self.send_error_v2(404)
            return
        try:
            auth = json.loads(raw)['auth']
            creds = auth['passwordCredentials']
            username, password = creds['username'], creds['password']
        except (ValueError, KeyError, TypeError):
            self.send_error_v2(400, 'Expecting auth.passwordCredentials '
                                    'with username and password.')
            return
        v3 = {'identity': {'methods': ['password'], 'password': {'user': {
            'name': username, 'domain': {'id': 'default'},
            'password': password}}}}
        if auth.get('tenantId'):
            v3['scope'] = {'project': {'id': auth['tenantId']}}
        elif auth.get('tenantName'):
            v3['scope'] = {'project': {'name': auth['tenantName'],
                                       'domain': {'id': 'default'}}}
        # no tenant: unscoped, as in v2 (Keystone v3 still scopes it to the
        # user's default project, if one is set)
        status, token_id, doc = self.keystone_v3({'auth': v3})
        if status in (400, 401, 403, 404):
            # v2 answered 401 for a bad password and for a tenant the user
            # has no role on alike
            self.send_error_v2(401)
            return
        if status != 201:
            self.send_error_v2(502, 'identity v3 answered %s' % status)
            return
        self.send_json(200, {'access': self.translate(token_id, doc['token'])})

    def keystone_v3(self, body):
        req = urllib.request.Request(
            self.server.keystone + '/v3/auth/tokens', method='POST',
            data=json.dumps(body).encode(),
            headers={'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return (r.status, r.headers['X-Subject-Token'],
                        json.loads(r.read()))
        except urllib.error.HTTPError as e:
            e.read()
            return e.code, None, None
        except OSError as e:
            sys.stderr.write('identity_v2: keystone unreachable: %s\n' % e)
            return 599, None, None

    def translate(self, token_id, tok):
        token = {'id': token_id,
                 'issued_at': v2_time(tok['issued_at'], True),
                 'expires': v2_time(tok['expires_at'], False),
                 'audit_ids': tok.get('audit_ids', [])}
        if 'project' in tok:
            token['tenant'] = {'id': tok['project']['id'],
                               'name': tok['project']['name'],
                               'description': None, 'enabled': True}
        roles = tok.get('roles', [])
        user = tok['user']
        return {
            'token': token,
            'serviceCatalog': translate_catalog(
                tok.get('catalog', []), self.base_url() + self.server.prefix),
            'user': {'id': user['id'], 'name': user['name'],
                     'username': user['name'],
                     'roles': [{'name': r['name']} for r in roles],
                     'roles_links': []},
            'metadata': {'is_admin': 0, 'roles': [r['id'] for r in roles]},
        }

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            BaseHTTPRequestHandler.log_message(self, fmt, *args)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=0,
                    help='0 (default) picks a free port')
    ap.add_argument('--prefix', default='/v2.0',
                    help='path of the v2.0 API (default /v2.0)')
    ap.add_argument('--keystone', default='http://127.0.0.1:5000',
                    help='Keystone base URL (with or without /v3)')
    ap.add_argument('--quiet', action='store_true',
                    help='do not log requests to stderr')
    args = ap.parse_args()

    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    srv.public_host = args.host
    prefix = args.prefix.strip('/')
    srv.prefix = '/' + prefix if prefix else ''
    ks = args.keystone.rstrip('/')
    srv.keystone = ks[:-3] if ks.endswith('/v3') else ks
    srv.quiet = args.quiet
    print('listening on %d' % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
