// Gap meter: spins for 0.2 ms, sleeps 4.8 ms (like a 200/s loop that busy-waits briefly); prints gaps > 100 us seen while spinning.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){double secs=atof(v[1]);double spin=atof(v[2])/1e6;double t0=now();long gaps=0;double worst=0;
 while(now()-t0<secs){double s=now(),p=s;while(p-s<spin){double q=now();if(q-p>worst)worst=q-p;if(q-p>100e-6){gaps++;printf("t=%.3f gap=%.0fus\n",q-t0,(q-p)*1e6);}p=q;}
  if(spin<1){struct timespec d={0,(long)((0.005-spin)*1e9)};nanosleep(&d,0);}}
 printf("gaps>100us %ld worst %.0fus\n",gaps,worst*1e6);}
