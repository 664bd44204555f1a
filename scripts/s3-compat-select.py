"""Selects the tests of ceph/s3-tests' test_s3.py that use only the S3 operations the stordaemon
gateway serves (docs/gateway.md), by reading the test file, never changing it.

A test is in when neither it nor any module-level helper it calls (transitively) calls an S3
operation outside SUPPORTED, or a client of another user, IAM, STS or SNS; and it carries no
marker of an unsupported feature. Prints one pytest node id per line on stdout; with --why,
prints every test left out and the reason on stderr.
"""
import ast
import sys

import botocore.session
from botocore import xform_name

SUPPORTED = {
    'list_buckets', 'create_bucket', 'head_bucket', 'delete_bucket', 'get_bucket_location',
    'put_object', 'get_object', 'head_object', 'delete_object', 'delete_objects', 'copy_object',
    'list_objects', 'list_objects_v2',
    'create_multipart_upload', 'upload_part', 'upload_part_copy', 'complete_multipart_upload',
    'abort_multipart_upload', 'list_parts', 'list_multipart_uploads',
}
# boto3 helpers built on the operations above
HELPERS = {'generate_presigned_url', 'get_paginator', 'upload_fileobj', 'download_fileobj', 'upload_file', 'download_file', 'copy'}
OTHER_USERS = {'get_alt_client', 'get_tenant_client', 'get_iam_client', 'get_iam_root_client', 'get_iam_alt_root_client',
               'get_sts_client', 'get_sns_client', 'get_v2_client', 'get_alt_iam_client', 'get_iam_s3client',
               'get_svc_client', 'get_tenant_iam_client', 'get_cloud_client', 'get_http_client', 'get_iam_user_client'}
MARKERS = {'appendobject', 'auth_aws2', 'bucket_policy', 'bucket_encryption', 'bucket_logging', 'bucket_logging_cleanup',
           'fails_without_logging_rollover', 'checksum', 'cloud_transition', 'cloud_restore',
           'encryption', 'group', 'group_policy', 'iam_account', 'iam_cross_account', 'iam_role',
           'iam_tenant', 'iam_user', 'lifecycle', 'lifecycle_expiration', 'lifecycle_transition', 'object_lock',
           'object_ownership', 'role_policy', 'session_policy', 's3select', 's3website', 's3website_routing_rules',
           's3website_redirect_location', 'sns', 'sse_s3', 'storage_class', 'tagging', 'test_of_sts', 'user_policy',
           'versioning', 'webidentity_test', 'abac_test', 'fails_with_subdomain'}

OPERATIONS = {xform_name(op) for op in botocore.session.get_session().get_service_model('s3').operation_names}


def main():
    path = sys.argv[1]
    why = '--why' in sys.argv
    tree = ast.parse(open(path).read())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def direct(fn):
        """S3 operations, other-user clients and module functions that fn calls."""
        ops, others, calls = set(), set(), set()
        for node in ast.walk(fn):
            # ACL=..., GrantRead=...: access control lists are not served; they matter only to a
            # request of someone else (an anonymous one here, other users are out anyway): the
            # owner may do everything whatever an object's or bucket's ACL says
            if isinstance(node, ast.keyword) and node.arg is not None and (node.arg == 'ACL' or node.arg.startswith('Grant')):
                ops.add('acl_argument')
            if isinstance(node, ast.Name) and node.id == 'get_unauthenticated_client':
                ops.add('anonymous_request')
            # ObjectLockEnabledForBucket=..., ChecksumAlgorithm=...: object lock, checksums
            if isinstance(node, ast.keyword) and node.arg in ('ObjectLockEnabledForBucket', 'ChecksumAlgorithm'):
                ops.add('object_lock' if node.arg.startswith('ObjectLock') else 'checksum')
            # requests.post(...) to a bucket: POST Object, the HTML form upload
            if isinstance(node, ast.Attribute) and node.attr == 'post' and getattr(node.value, 'id', '') == 'requests':
                ops.add('post_object')
            if isinstance(node, ast.Attribute) and node.attr in OPERATIONS | HELPERS:
                ops.add(node.attr)
            if isinstance(node, ast.Name) and node.id in OTHER_USERS:
                others.add(node.id)
            if isinstance(node, ast.Name) and node.id in funcs:
                calls.add(node.id)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in OPERATIONS:
                # client.meta.events.register('before-call.s3.PutBucketAcl', ...) and the like
                ops.add(node.value)
        return ops, others, calls

    memo = {}

    def closure(name, seen=None):
        if name in memo:
            return memo[name]
        seen = seen or set()
        seen.add(name)
        ops, others, calls = direct(funcs[name])
        for c in calls:
            if c not in seen:
                o, x = closure(c, seen)
                ops, others = ops | o, others | x
        memo[name] = (ops, others)
        return ops, others

    for name, fn in funcs.items():
        if not name.startswith('test_'):
            continue
        marks = set()
        for d in fn.decorator_list:
            if isinstance(d, ast.Attribute) and isinstance(d.value, ast.Attribute) and getattr(d.value.value, 'id', '') == 'pytest':
                marks.add(d.attr)
        ops, others = closure(name)
        ops = ops - {'acl_argument', 'anonymous_request'} | ({'acl'} if {'acl_argument', 'anonymous_request'} <= ops else set())
        bad_ops = sorted(o for o in ops if o not in SUPPORTED | HELPERS)
        bad_marks = sorted(marks & MARKERS)
        if bad_ops or others or bad_marks:
            if why:
                print(f'{name}: out ({", ".join(bad_ops + sorted(others) + ["@" + m for m in bad_marks])})', file=sys.stderr)
            continue
        print(f'{path}::{name}')


main()
