/* keeps the support library non-empty */
int attn_test_support_stub_;
