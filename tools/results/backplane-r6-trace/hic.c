// Wake-up lateness meter: sleeps 1 ms at a time for N seconds; prints wakes later than 300 us.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){double secs=atof(v[1]);double t0=now();long n=0,late=0;double worst=0;
 struct timespec next;clock_gettime(CLOCK_MONOTONIC,&next);
 while(now()-t0<secs){next.tv_nsec+=1000000;if(next.tv_nsec>=1000000000){next.tv_nsec-=1000000000;next.tv_sec++;}
  clock_nanosleep(CLOCK_MONOTONIC,TIMER_ABSTIME,&next,0);double w=now();double due=next.tv_sec+next.tv_nsec/1e9;double l=(w-due)*1e6;n++;
  if(l>worst)worst=l; if(l>300){late++;printf("t=%.3f late=%.0fus\n",w-t0,l);}
  if(w-due>0.001){clock_gettime(CLOCK_MONOTONIC,&next);}}
 printf("wakes %ld late>300us %ld worst %.0fus\n",n,late,worst);}
