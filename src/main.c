#include <stdio.h>
int main(void)
{
    puts("certgate " CERTGATE_VERSION);
    return 0;
}
