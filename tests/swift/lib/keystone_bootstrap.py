#!/usr/bin/python3
"""Create the fixture's roles, projects, users and object-store catalog.

Usage: keystone_bootstrap.py SPEC.json OUT.json

Idempotent: everything is looked up by name first and only created when
missing, so a run that failed half way can simply be repeated. Talks plain
Keystone v3 REST (stdlib only) as the `admin` user that
`keystone-manage bootstrap` created, and writes the IDs it ends up with
(users, projects, admin) to OUT.json.
"""
import json
import sys
import urllib.parse
import urllib.request


class Keystone(object):
    def __init__(self, url, user, password, project):
        self.url = url.rstrip('/')
        self.token = None
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': user, 'domain': {'id': 'default'},
                'password': password}}},
            'scope': {'project': {'name': project,
                                  'domain': {'id': 'default'}}}}}
        resp, headers = self.call('POST', '/auth/tokens', body)
        self.token = headers['X-Subject-Token']
        self.admin_user_id = resp['token']['user']['id']
        self.admin_project_id = resp['token']['project']['id']

    def call(self, method, path, body=None, **query):
        url = self.url + path
        if query:
            url += '?' + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header('Content-Type', 'application/json')
        if self.token:
            req.add_header('X-Auth-Token', self.token)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return (json.loads(raw) if raw else None), r.headers
        except urllib.error.HTTPError as e:
            raise SystemExit('%s %s -> %s %s' % (method, url, e.code,
                                                 e.read()[:500]))

    def find(self, collection, **query):
        items = self.call('GET', '/' + collection, **query)[0][collection]
        if len(items) > 1:
            raise SystemExit('ambiguous %s %r: %r' % (collection, query, items))
        return items[0] if items else None

    def ensure(self, collection, entity, **query):
        """Find by query, else create `entity`; returns the entity dict."""
        found = self.find(collection, **query)
        if found:
            return found
        one = collection[:-1]
        return self.call('POST', '/' + collection, {one: entity})[0][one]


def main():
    spec = json.load(open(sys.argv[1]))
    ks = Keystone(spec['auth_url'], 'admin', spec['admin_password'], 'admin')
    dom = 'default'

    roles = {r: ks.ensure('roles', {'name': r}, name=r)['id']
             for r in spec['roles']}

    out = {'admin': {'id': ks.admin_user_id,
                     'project_id': ks.admin_project_id},
           'users': {}}
    for u in spec['users']:
        project = ks.ensure('projects', {'name': u['project'], 'domain_id': dom,
                                         'description': u['description']},
                            name=u['project'], domain_id=dom)
        user = ks.find('users', name=u['name'], domain_id=dom)
        fields = {'password': u['password'], 'enabled': True,
                  # unscoped password auth then comes back project-scoped
                  'default_project_id': project['id']}
        if user is None:
            fields.update(name=u['name'], domain_id=dom)
            user = ks.call('POST', '/users', {'user': fields})[0]['user']
        else:
            ks.call('PATCH', '/users/' + user['id'], {'user': fields})
        for r in u['roles']:   # PUT is idempotent
            ks.call('PUT', '/projects/%s/users/%s/roles/%s'
                    % (project['id'], user['id'], roles[r]))
        out['users'][u['name']] = {'id': user['id'], 'project': u['project'],
                                   'project_id': project['id']}

    svc = ks.ensure('services', {'name': 'swift', 'type': 'object-store',
                                 'description': 'OpenStack Object Storage'},
                    type='object-store')
    have = {(e['interface'], e['region_id']): e for e in
            ks.call('GET', '/endpoints', service_id=svc['id'])[0]['endpoints']}
    for iface, url in sorted(spec['swift_endpoints'].items()):
        e = have.get((iface, spec['region']))
        if e is None:
            ks.call('POST', '/endpoints', {'endpoint': {
                'service_id': svc['id'], 'interface': iface, 'url': url,
                'region_id': spec['region']}})
        elif e['url'] != url:
            ks.call('PATCH', '/endpoints/' + e['id'], {'endpoint': {'url': url}})
    out['object_store_service_id'] = svc['id']

    with open(sys.argv[2], 'w') as f:
        json.dump(out, f, indent=2, sort_keys=True)


if __name__ == '__main__':
    main()
